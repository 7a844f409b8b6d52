"""Notebooks read the same everywhere (Colab, JupyterLab, VS Code, GitHub, the book): their
markdown cells are plain CommonMark, without MyST roles or directives, which only the book
would render. Numbers appear in the cells' outputs (``tl.glue`` prints them); the chapter
pages in ``book/`` paste them."""

import json
import re
from pathlib import Path

import pytest

from tlutils.book import BOOK_URL

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

ROLE = re.compile(r"\{[a-z][\w:.-]*\}`")  # {glue:text}`...`, {term}`...`, {cite}`...`
DIRECTIVE = re.compile(
    r"^\s*(`{3,}|:{3,})\s*\{[\w:-]+\}", re.M
)  # ```{note}, :::{exercise}
TARGET = re.compile(r"^\s*\([\w-]+\)=\s*$", re.M)  # (label)=
LINK = re.compile(r"\]\((https?://[^)\s]+)\)")


def markdown(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


def myst_syntax(text: str) -> list[str]:
    """The MyST-only pieces of a markdown text (roles, directives, targets)."""
    return [
        m.group(0).strip()
        for pattern in (ROLE, DIRECTIVE, TARGET)
        for m in pattern.finditer(text)
    ]


def test_the_check_finds_myst_syntax():
    text = "A {glue:text}`acc:.3f` and {term}`probe`.\n```{note}\nx\n```\n(ch3)=\n"
    assert myst_syntax(text) == ["{glue:text}`", "{term}`", "```{note}", "(ch3)="]
    assert myst_syntax("Plain `code`, a [link](https://x.org) and $x^2$.") == []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_markdown_is_plain_commonmark(notebook):
    found = [piece for text in markdown(notebook) for piece in myst_syntax(text)]
    assert not found, (
        f"{notebook.name}: MyST syntax in markdown cells, shown raw outside the book: "
        f"{found[:10]}. Refer to numbers in words (tl.glue prints them in the output), "
        f"and link terms and references to the book's pages ({BOOK_URL}...)."
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_links_to_the_book_use_its_address(notebook):
    links = [u for text in markdown(notebook) for u in LINK.findall(text)]
    book = [u for u in links if "tl-course" in u and "github.com" not in u]
    assert all(u.startswith(BOOK_URL) for u in book), book
