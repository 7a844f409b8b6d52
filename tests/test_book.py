"""Consistency of the book: every notebook is in the table of contents, stored without outputs,
installs tlutils in Colab from the repository named in _config.yml, and uses the GPU when there is one."""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def code_cells(path):
    return [
        "".join(c["source"])
        for c in json.loads(path.read_text())["cells"]
        if c["cell_type"] == "code"
    ]


def toc_files(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root"):
                yield value
            else:
                yield from toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from toc_files(item)


def test_every_notebook_and_page_is_in_the_toc():
    listed = set(toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text())))
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in listed, f"{nb.name} is missing from _toc.yml"
    for entry in listed:
        assert (ROOT / f"{entry}.md").exists() or (ROOT / f"{entry}.ipynb").exists(), (
            f"_toc.yml lists missing {entry}"
        )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_colab_cell_uses_the_configured_repository(notebook):
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    first = code_cells(notebook)[0]
    # installs wherever tlutils is missing (Colab, Kaggle, a bare Jupyter), not only in Colab
    assert 'if importlib.util.find_spec("tlutils") is None:' in first, first
    assert f'REPOSITORY = "git+{url}"' in first, first
    assert '%pip install -q "tlutils @ {REPOSITORY}"' in first, first
    assert "raise SystemExit(" in first and "nothing to install" in first, first


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_uses_the_available_device_and_is_stored_clean(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    assert not any(
        c.get("outputs") or c.get("execution_count")
        for c in cells
        if c["cell_type"] == "code"
    )
    source = "\n".join(code_cells(notebook))
    assert "tl.get_device()" in source
    assert "from myst_nb import" not in source, "use tl.glue: Colab has no myst_nb"


PAGES = sorted((ROOT / "book").glob("*.md"))
COLUMN = 88  # characters the book's column shows before a code block scrolls sideways


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_code_blocks_fit_the_column(page):
    blocks = re.findall(
        r"^```(?:python|bash)\n(.*?)^```", page.read_text(), flags=re.S | re.M
    )
    long = [
        line for block in blocks for line in block.splitlines() if len(line) > COLUMN
    ]
    assert not long, f"{page.name}: code lines over {COLUMN} characters: {long}"


def _is_plumbing(statement: ast.stmt) -> bool:
    """An ``assert``, a ``tl.glue(...)`` call, or an ``if`` holding only those."""
    if isinstance(statement, ast.Assert):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        return ast.unparse(statement.value.func) == "tl.glue"
    if isinstance(statement, ast.If):
        return all(_is_plumbing(s) for s in statement.body + statement.orelse)
    return False


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_plumbing_cells_are_hidden_in_the_rendered_page(notebook):
    """Cells that only check claims or glue numbers (and the Colab setup) are folded away
    in the book (tag hide-cell), so a page reads as lesson, code of the idea, result."""
    cells = [
        c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"
    ]
    visible = []
    for index, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        source = "".join(cell["source"])
        try:
            statements = ast.parse(source).body
        except SyntaxError:  # IPython magics: only the Colab cell has them
            statements = []
        plumbing = index == 0 or (statements and all(map(_is_plumbing, statements)))
        if plumbing and not {"hide-cell", "remove-cell"} & set(tags):
            visible.append(source.splitlines()[0] if source else "(empty)")
    assert not visible, f"{notebook.name}: tag these cells hide-cell: {visible}"
