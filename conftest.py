"""Root pytest configuration: timing of the notebook runs for the book's appendix.

When the environment variable ``TLUTILS_TIMINGS_OUT`` names a file, every notebook that nbval
executes is timed (wall time from its first cell to its last, kernel start included) and the
peak resident memory of pytest's child processes (the kernel and its workers) during that time
is recorded; at the end the table is written to that file in the format of
``scripts/time_notebooks.py``. CI does this in its test run, so the appendix shows the timings of
the very run that tested the notebooks, without executing them once more. The same run times
the calibration workload of ``scripts/time_notebooks.py`` before the first notebook and after
the last, so the table also gives each notebook in machine-independent units.

Every notebook that nbval executed without a failure is stored, with its outputs, in the book's
execution cache (``_ext/execution_cache.py``), so ``jupyter-book build .`` after ``pytest``
shows these outputs instead of executing every notebook a second time.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
OUT_ENV = "TLUTILS_TIMINGS_OUT"

_windows: dict[str, list] = {}  # notebook -> [start, end, status]
_calibration: list[float] = []  # seconds of the calibration workload, before and after
_samples: list[tuple[float, int]] = []  # (time, RSS of child processes in bytes)
_stop = threading.Event()


def _timer_module():
    spec = importlib.util.spec_from_file_location(
        "time_notebooks", ROOT / "scripts" / "time_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["time_notebooks"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _execution_cache_module():
    spec = importlib.util.spec_from_file_location(
        "execution_cache", ROOT / "_ext" / "execution_cache.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _poll(tn, interval: float = 0.2) -> None:
    me = os.getpid()
    while not _stop.is_set():
        _samples.append((time.perf_counter(), tn.rss_bytes(tn.descendants(me))))
        _stop.wait(interval)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(OUT_ENV) and Path("/proc/self/statm").exists():
        config._tlutils_timer = _timer_module()
        threading.Thread(
            target=_poll, args=(config._tlutils_timer,), daemon=True
        ).start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    path = Path(str(item.fspath))
    notebook = path.suffix == ".ipynb"
    if notebook and path.name not in _windows:
        tn = getattr(item.config, "_tlutils_timer", None)
        if tn is not None and not _calibration:
            _calibration.append(tn.calibrate())
        _windows[path.name] = [time.perf_counter(), None, "ok"]
    yield
    if notebook:
        _windows[path.name][1] = time.perf_counter()
        if nextitem is None or nextitem.parent is not item.parent:
            _store_executed(item.parent, path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each executed cell's outputs on the notebook nbval read (for the book)."""
    outcome = yield
    report = outcome.get_result()
    outputs = getattr(item, "test_outputs", None)
    if call.when != "call" or outputs is None or not hasattr(item, "cell"):
        return
    if not report.passed:
        item.parent._tlutils_failed = True
        return
    counter = getattr(item.parent, "_tlutils_count", 0) + 1
    item.parent._tlutils_count = counter
    item.cell.outputs = outputs
    item.cell.execution_count = counter
    for output in outputs:
        if output.get("output_type") == "execute_result":
            output["execution_count"] = counter


def _store_executed(notebook_item: pytest.Collector, path: Path) -> None:
    """Store a notebook whose every code cell ran and passed in the book's cache."""
    nb = getattr(notebook_item, "nb", None)
    cells = [c for c in getattr(nb, "cells", []) if c.cell_type == "code"]
    ran = getattr(notebook_item, "_tlutils_count", 0)
    if (
        nb is None
        or getattr(notebook_item, "_tlutils_failed", False)
        or ran != len(cells)
    ):
        return  # a failed, skipped or partial run is never shown in the book
    start, end, _ = _windows[path.name]
    try:
        _execution_cache_module().store(path, nb, end - start)
    except (
        Exception
    ) as error:  # the test run's verdict never depends on the book's cache
        print(f"\nexecution cache: {path.name} not stored ({error})")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = Path(report.fspath).name
    if report.failed and name in _windows:
        _windows[name][2] = "failed"


def pytest_sessionfinish(session: pytest.Session) -> None:
    tn = getattr(session.config, "_tlutils_timer", None)
    if tn is None or not _windows:
        return
    _stop.set()
    if _calibration:
        _calibration.append(tn.calibrate())
    timings = []
    for name, (start, end, status) in _windows.items():
        end = end or time.perf_counter()
        peak = max((rss for t, rss in _samples if start <= t <= end), default=0)
        timings.append(
            tn.Timing(name, end - start, peak / 2**20 if peak else None, status)
        )
    text = tn.table(
        timings,
        dt.date.today().isoformat(),
        tn.machine() + " (CI test run, empty feature cache)",
        _calibration,
    )
    Path(os.environ[OUT_ENV]).write_text(text)


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """The notebooks are slow: ``pytest -m "not slow"`` leaves them out (the quick loop)."""
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
