"""Root pytest configuration: timing of the notebook runs for the book's appendix.

When the environment variable ``TLUTILS_TIMINGS_OUT`` names a file, every notebook that nbval
executes is timed (wall time from its first cell to its last, kernel start included) and the
peak resident memory of pytest's child processes (the kernel and its workers) during that time
is recorded; at the end the table is written to that file in the format of
``scripts/time_notebooks.py``. CI does this in its test run, so the appendix shows the timings of
the very run that tested the notebooks, without executing them once more.
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
    if path.suffix == ".ipynb":
        _windows.setdefault(path.name, [time.perf_counter(), None, "ok"])
    yield
    if path.suffix == ".ipynb":
        _windows[path.name][1] = time.perf_counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = Path(report.fspath).name
    if report.failed and name in _windows:
        _windows[name][2] = "failed"


def pytest_sessionfinish(session: pytest.Session) -> None:
    tn = getattr(session.config, "_tlutils_timer", None)
    if tn is None or not _windows:
        return
    _stop.set()
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
    )
    Path(os.environ[OUT_ENV]).write_text(text)
