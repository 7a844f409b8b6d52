"""Tests of scripts/strip_outputs.py and scripts/time_notebooks.py on tiny notebooks the tests write."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from helpers import load_script

pytestmark = pytest.mark.slow  # the quick loop leaves it out

strip_outputs = load_script("scripts/strip_outputs.py")
time_notebooks = load_script("scripts/time_notebooks.py")


def _notebook(path: Path, *sources: str, executed: bool = False) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny")] + [
        nbformat.v4.new_code_cell(s) for s in sources
    ]
    if executed:
        for n, cell in enumerate(nb.cells[1:], start=1):
            cell.execution_count = n
            cell.outputs = [
                nbformat.v4.new_output("stream", name="stdout", text=f"out {n}\n")
            ]
            cell.metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
            cell.metadata["tags"] = ["keep-me"]
    nbformat.write(nb, path)
    return path


def test_strip_check_and_strip_in_place(tmp_path: Path, capsys):
    dirty = _notebook(tmp_path / "dirty.ipynb", "print(1)", "x = 2", executed=True)
    clean = _notebook(tmp_path / "clean.ipynb", "print(1)")
    assert strip_outputs.main(["--check", str(clean)]) == 0
    assert strip_outputs.main(["--check", str(clean), str(dirty)]) == 1
    out = capsys.readouterr().out
    assert (
        "dirty.ipynb: outputs or execution counts in 2 code cell(s)" in out
        and "clean.ipynb:" not in out
    )
    assert (
        nbformat.read(dirty, as_version=4).cells[1].outputs
    )  # --check changed nothing

    clean_bytes = clean.read_bytes()
    assert strip_outputs.main([str(clean), str(dirty)]) == 0
    assert (
        clean.read_bytes() == clean_bytes
    )  # an already clean notebook is not rewritten
    nb = nbformat.read(dirty, as_version=4)
    for cell in nb.cells[1:]:
        assert cell.outputs == [] and cell.execution_count is None
        assert "execution" not in cell.metadata and cell.metadata["tags"] == ["keep-me"]
    assert [c.source for c in nb.cells] == ["# tiny", "print(1)", "x = 2"]
    assert strip_outputs.main(["--check", str(dirty)]) == 0


def test_strip_rejects_non_notebooks(tmp_path: Path):
    (tmp_path / "a.py").write_text("x = 1\n")
    assert strip_outputs.main([str(tmp_path / "a.py")]) == 2


def test_descendants_and_rss_of_a_child_process():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; b = bytearray(64 * 2**20); time.sleep(30)"]
    )
    try:
        for _ in range(100):  # wait until the child has allocated its 64 MiB
            if time_notebooks.rss_bytes([child.pid]) > 64 * 2**20:
                break
            subprocess.run(["sleep", "0.05"])
        assert child.pid in time_notebooks.descendants(os.getpid())
        assert os.getpid() not in time_notebooks.descendants(os.getpid())
        assert time_notebooks.rss_bytes([child.pid]) > 64 * 2**20
        assert time_notebooks.rss_bytes([2**22 + 12345]) == 0  # no such process
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(
    importlib.util.find_spec("ipykernel") is None,
    reason="needs the python3 Jupyter kernel",
)
def test_time_notebooks_runs_notebooks_and_writes_table(tmp_path: Path):
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    ok = _notebook(
        nb_dir / "ok.ipynb",
        "import os\nassert os.path.basename(os.getcwd()) == 'nbs', os.getcwd()",  # cwd = the notebook's folder
        "big = bytearray(200 * 2**20)\nimport time; time.sleep(0.5)",
    )
    bad = _notebook(nb_dir / "bad.ipynb", "raise ValueError('boom')")
    out = tmp_path / "table.md"
    assert (
        time_notebooks.main(
            [str(ok), str(bad), "--out", str(out), "--interval", "0.05"]
        )
        == 1
    )
    rows = {
        line.split("|")[1].strip(): line
        for line in out.read_text().splitlines()
        if line.startswith("| `")
    }
    ok_cells = [c.strip() for c in rows["`ok.ipynb`"].split("|")[1:-1]]
    # notebook | wall (s) | calibration units | at reference speed (s) | budget | peak | status
    assert (
        ok_cells[-1] == "ok" and float(ok_cells[1]) >= 0
    )  # wall time in whole seconds
    assert float(ok_cells[2]) >= 0 and "(within)" in ok_cells[4]
    assert (
        float(ok_cells[5]) >= 200
    )  # the 200 MiB buffer is seen in the kernel's peak memory
    assert "failed: ValueError: boom" in rows["`bad.ipynb`"]
    text = out.read_text()
    assert (
        text.startswith("Measured on ")
        and "CPU cores" in text
        and "| **all 2** |" in text
        and "Calibration (5 training steps of Lite0" in text
    )
    assert (
        nbformat.read(ok, as_version=4).cells[1].outputs == []
    )  # the notebook file is not modified


def test_table_reports_calibration_units_and_budgets():
    timings = [
        time_notebooks.Timing("a.ipynb", 100.0, 10.0, "ok"),
        time_notebooks.Timing("b.ipynb", 500.0, 20.0, "ok"),
    ]
    text = time_notebooks.table(timings, "today", "here", [9.0, 11.0])
    reference = time_notebooks.REFERENCE_CALIBRATION_S
    rows = [line.split("|")[1:-1] for line in text.splitlines() if "ipynb" in line]
    assert float(rows[0][2]) == 10.0 and float(rows[1][2]) == 50.0  # seconds / 10 s
    assert float(rows[1][3]) == round(50 * reference)  # at the reference speed
    assert "9.0 s and 11.0 s in this run" in text
    over = 50 * reference > time_notebooks.BUDGET_NOTEBOOK_S
    assert ("OVER" in rows[1][4]) == over
