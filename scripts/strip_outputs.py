#!/usr/bin/env python3
"""Strip outputs and execution counts from notebooks, in place; or check that there are none.

Notebooks are stored in git without outputs (CONTRIBUTING.md). Usage::

    python scripts/strip_outputs.py notebooks/*.ipynb            # strip, in place
    python scripts/strip_outputs.py --check notebooks/*.ipynb    # exit 1 listing notebooks with outputs

Stripping removes every code cell's ``outputs`` and ``execution_count`` and the per-cell
``execution`` timing metadata that JupyterLab records; everything else (sources, cell ids, tags,
notebook metadata) is kept. A file is rewritten only if it changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat


def dirty_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of the code cells that carry outputs, an execution count or execution metadata."""
    return [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and (
            cell.get("outputs")
            or cell.get("execution_count") is not None
            or "execution" in cell.get("metadata", {})
        )
    ]


def strip(nb: nbformat.NotebookNode) -> bool:
    """Remove outputs, execution counts and execution metadata from ``nb``; True if anything changed."""
    changed = False
    for i in dirty_cells(nb):
        cell = nb.cells[i]
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)
        changed = True
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 if a notebook has outputs",
    )
    args = ap.parse_args(argv)

    dirty = []
    for path in args.notebooks:
        if path.suffix != ".ipynb":
            print(f"strip_outputs: not a notebook: {path}", file=sys.stderr)
            return 2
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        cells = dirty_cells(nb)
        if not cells:
            continue
        if args.check:
            dirty.append(path)
            print(
                f"{path}: outputs or execution counts in {len(cells)} code cell(s) (first: cell {cells[0]})"
            )
        elif strip(nb):
            nbformat.write(nb, path)
            print(f"stripped {path} ({len(cells)} cell(s))")
    if dirty:
        print(
            f"\n{len(dirty)} notebook(s) have outputs: run  python scripts/strip_outputs.py "
            + " ".join(map(str, dirty))
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
