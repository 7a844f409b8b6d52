"""Putting measured numbers into the book's text (all chapters).

The rendered book pastes numbers that a notebook measured into its prose with MyST-NB's
``glue``. Readers in Colab or Jupyter do not need MyST-NB: there :func:`glue` just shows
the value (or nothing), so the notebooks run the same everywhere.
"""

from __future__ import annotations

from typing import Any

__all__ = ["glue"]


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}`name``` in the book; works without MyST-NB too (all chapters).

    NumPy and PyTorch scalars become plain Python numbers, so that format specs such as
    ``{glue:text}`name:.2f``` work on them.
    """
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show

            show(value)
        return
    myst_glue(name, value, display=display)
