"""Tests for scripts/compare_runs.py: numbers compared cell by cell, timings ignored."""

import nbformat
from helpers import load_script
from nbformat.v4 import new_code_cell, new_notebook, new_output

compare_runs = load_script("scripts/compare_runs.py")


def executed(*texts, stderr=""):
    """A notebook whose code cells printed ``texts`` (and ``stderr`` in the first)."""
    cells = []
    for i, text in enumerate(texts):
        outputs = [new_output("stream", name="stdout", text=text)]
        if stderr and i == 0:
            outputs.append(new_output("stream", name="stderr", text=stderr))
        cells.append(new_code_cell("pass", outputs=outputs))
    return new_notebook(cells=cells)


def test_equal_runs_have_no_difference():
    a = executed("val accuracy 0.881\n", "table\n0.5 0.25\n")
    result = compare_runs.compare(
        a, executed("val accuracy 0.881\n", "table\n0.5 0.25\n")
    )
    assert result.ok and result.equal == 3 and result.cells == 2


def test_a_changed_accuracy_is_a_difference_that_names_its_cell():
    result = compare_runs.compare(
        executed("x\n", "acc 0.881\n"), executed("x\n", "acc 0.884\n")
    )
    assert not result.ok
    assert result.differences == ["cell 1: 'acc 0.881' vs 'acc 0.884'"]


def test_timings_are_ignored():
    first = executed(
        "epoch 12.3 s, 45 ms per batch, 5x faster\n",
        "[main: 40 s wall, 77 s CPU so far]\n",
    )
    second = executed(
        "epoch 14.0 s, 47 ms per batch, 7x faster\n",
        "[main: 44 s wall, 80 s CPU so far]\n",
    )
    result = compare_runs.compare(first, second)
    assert result.ok and result.timings == 5 and result.equal == 0


def test_timing_columns_of_a_table_are_ignored():
    first = executed("dataset  accuracy  seconds\nflowers     0.876     19.7\n")
    second = executed("dataset  accuracy  seconds\nflowers     0.876     23.1\n")
    result = compare_runs.compare(first, second)
    assert result.ok and result.equal == 1 and result.timings == 1


def test_a_table_titled_seconds_is_a_timing_table():
    table = "accuracy   probe  scratch\nflowers    0.766    0.160\n\nseconds   probe  scratch\n"
    first = executed(table + "flowers      0.7      5.8\n")
    second = executed(table + "flowers      1.1      6.4\n")
    result = compare_runs.compare(first, second)
    assert result.ok and result.equal == 2 and result.timings == 2
    changed = executed(table.replace("0.160", "0.170") + "flowers      0.7      5.8\n")
    assert not compare_runs.compare(first, changed).ok


def test_stderr_is_ignored():
    result = compare_runs.compare(
        executed("1\n", stderr="10%|#   | 3/31"), executed("1\n", stderr="97%")
    )
    assert result.ok


def test_a_different_shape_is_reported_not_raised():
    result = compare_runs.compare(executed("1\n", "2\n"), executed("1\n"))
    assert not result.ok and "code cells" in result.differences[0]
    result = compare_runs.compare(executed("1 2\n"), executed("1\n"))
    assert "numbers printed" in result.differences[0]


def write(path, *sources):
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), path)
    return path


def test_end_to_end_a_deterministic_notebook_passes(tmp_path, capsys):
    path = write(
        tmp_path / "same.ipynb",
        "print(1 + 1)",
        "import time\nprint(f'{time.time() % 1:.3f} s')",
    )
    assert compare_runs.main([str(path), "--out", str(tmp_path / "report.md")]) == 0
    assert (
        "1 numbers equal, 1 timings ignored, 0 differ"
        in (tmp_path / "report.md").read_text()
    )


def test_end_to_end_a_random_number_fails(tmp_path):
    path = write(tmp_path / "random.ipynb", "import random\nprint(random.random())")
    assert compare_runs.main([str(path)]) == 1


def test_executed_mode_compares_two_finished_runs_without_running(tmp_path, capsys):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run_a.mkdir(), run_b.mkdir()
    nbformat.write(executed("acc 0.881\n", "took 3.2 s\n"), run_a / "ch9.ipynb")
    nbformat.write(executed("acc 0.881\n", "took 4.0 s\n"), run_b / "ch9.ipynb")
    assert compare_runs.main(["--executed", str(run_a), str(run_b)]) == 0
    nbformat.write(executed("acc 0.875\n", "took 4.0 s\n"), run_b / "ch9.ipynb")
    nbformat.write(executed("acc 0.5\n"), run_a / "ch8.ipynb")  # missing in run b
    assert compare_runs.main(["--executed", str(run_a), str(run_b)]) == 1
    out = capsys.readouterr().out
    assert "acc 0.881" in out and "ch8" in out and "missing" in out


def test_progress_bars_are_skipped():
    bar = "epochs: 100%|##########| 1/1 [00:01<00:00, {}, val_acc=0.417]\r"
    first = executed(bar.format("1.17s/it") + "accuracy 0.9\n")
    second = executed(bar.format("1.01it/s") * 2 + "accuracy 0.9\n")
    result = compare_runs.compare(first, second)
    assert result.ok and result.equal == 1


def test_myst_nb_repeated_stream_chunks_count_once():
    merged = "a 0.1\nb 0.2\nc 0.3\n"
    notebook = executed(merged)
    notebook.cells[0].outputs += [
        new_output("stream", name="stdout", text="b 0.2\n"),
        new_output("stream", name="stdout", text="c 0.3\n"),
    ]
    result = compare_runs.compare(executed(merged), notebook)
    assert result.ok and result.equal == 3
