"""Putting measured numbers into the book's text (all chapters).

The rendered book's chapter pages (``book/``) paste numbers that a notebook measured into
their prose with MyST-NB's ``glue``. The notebooks themselves are plain Jupyter notebooks
that read the same in Colab, JupyterLab, VS Code and the book: :func:`glue` stores the value
for the book when MyST-NB is there, and prints ``name = value`` in the format the page uses,
so a reader sees every pasted number in the notebook's own output.
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["glue", "BOOK_URL", "book_link"]

#: Where the rendered book lives (the ``html.baseurl`` of ``_config.yml``; a test checks
#: that both agree). Notebooks link glossary terms and references to its pages.
BOOK_URL = "https://tl-course.github.io/transfer-learning-with-pytorch/"


def book_link(page: str, anchor: str = "") -> str:
    """The address of a page of the rendered book, e.g. ``book_link("book/glossary",
    "term-linear-probe")`` (all chapters)."""
    return (
        BOOK_URL + page.removesuffix(".md") + ".html" + (f"#{anchor}" if anchor else "")
    )


def glue(name: str, value: Any, fmt: str = "", display: bool = False) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}`name:fmt``` on a chapter page, and
    print ``name = value`` formatted with ``fmt`` (e.g. ``".3f"``), so the number shows in
    the notebook's own output too (all chapters).

    NumPy and PyTorch scalars become plain Python numbers, so that format specs such as
    ``.2f`` work on them. Numbers and text are printed; other values (figures, tables) are
    stored only, or shown with ``display=True``; a pandas table is stored without its row
    numbers (the index).
    """
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if type(value).__name__ == "DataFrame":  # a table: no row numbers on the page
        value = value.style.hide(axis="index")
    if not display and isinstance(value, (numbers.Number, str)):
        print(f"{name} = {value:{fmt}}")
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show

            show(value)
        return
    myst_glue(name, value, display=display)
