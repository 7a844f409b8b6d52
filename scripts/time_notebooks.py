#!/usr/bin/env python3
"""Execute the course notebooks one after the other and tabulate wall time and peak memory.

Each notebook runs in a fresh ``python3`` kernel (nbclient) with ``notebooks/`` as working
directory, exactly as in the book build; the notebook files are not modified. While it runs, a
thread polls ``/proc`` every ``--interval`` seconds and sums the resident memory (RSS) of every
process started by this script: the kernel and anything it starts (e.g. DataLoader workers).
The peak of that sum is reported. Shared pages of forked workers are counted once per process,
so the figure is an upper bound.

The markdown table goes to ``book/appendix_timings_table.md`` (included by the timings appendix)
and to stdout. Usage::

    python scripts/time_notebooks.py                      # every notebooks/*.ipynb
    python scripts/time_notebooks.py notebooks/ch2_*.ipynb --out /tmp/t.md

Exit status 1 if a notebook failed (its row says so; the others still run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# --------------------------------------------------------------------------- memory of a process tree


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids for every process visible in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        # Field 4 is the parent pid; the command name (field 2) may contain spaces, so split after ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (children, grandchildren, ...), not ``pid`` itself."""
    children, out, todo = _children_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_bytes(pids: list[int]) -> int:
    """Sum of the resident set sizes of ``pids`` (processes that ended meanwhile count 0)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


class PeakTreeRSS:
    """Context manager: polls the RSS of this process's descendants; ``peak`` holds the maximum (bytes)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = Path("/proc/self/statm").exists()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(descendants(me)))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakTreeRSS:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()


# --------------------------------------------------------------------------- running notebooks


@dataclass
class Timing:
    notebook: str
    seconds: float
    peak_mib: float | None
    status: str


def run_notebook(
    path: Path, timeout: int, kernel: str = "python3", interval: float = 0.2
) -> Timing:
    """Execute one notebook in a fresh kernel (cwd = its folder); measure wall time and peak tree RSS."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import (
        CellExecutionError,
        CellTimeoutError,
        DeadKernelError,
    )

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        resources={"metadata": {"path": str(path.parent)}},
    )
    status = "ok"
    with PeakTreeRSS(interval) as mem:
        t0 = time.perf_counter()
        try:
            client.execute()
        except CellExecutionError as e:
            status = (
                f"failed: {e.ename}: {e.evalue}"[:100]
                .replace("|", "/")
                .replace("\n", " ")
            )
        except (CellTimeoutError, DeadKernelError) as e:
            status = f"failed: {type(e).__name__}"
        seconds = time.perf_counter() - t0
    peak = mem.peak / 2**20 if mem.available else None
    return Timing(path.name, seconds, peak, status)


def machine() -> str:
    """Cores, CPU model, memory and accelerator of this machine, in one line."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(
            Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]
        )
        mem = f", {mem_kib / 2**20:.0f} GiB RAM"
    except (OSError, IndexError, ValueError):
        mem = ""
    cores = (
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count()
    )
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"GPU {torch.cuda.get_device_name(0)}"
        gpu += f", torch {torch.__version__}"
    except ImportError:
        pass
    return (
        f"{cores} CPU cores ({model}){mem}, {gpu}, Python {platform.python_version()}"
    )


def table(timings: list[Timing], date: str, where: str) -> str:
    """The markdown table (with a caption line naming date and machine) of the timings."""
    lines = [
        f"Measured on {date} on {where}.",
        "",
        "| notebook | wall time (s) | peak memory (MiB) | status |",
        "| --- | ---: | ---: | --- |",
    ]
    for t in timings:
        mib = f"{t.peak_mib:.0f}" if t.peak_mib is not None else "n/a"
        lines.append(f"| `{t.notebook}` | {t.seconds:.0f} | {mib} | {t.status} |")
    peaks = [t.peak_mib for t in timings if t.peak_mib is not None]
    total_peak = f"{max(peaks):.0f} (max)" if peaks else "n/a"
    lines.append(
        f"| **all {len(timings)}** | **{sum(t.seconds for t in timings):.0f}** | {total_peak} | |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb"
    )
    ap.add_argument(
        "--out", type=Path, default=ROOT / "book" / "appendix_timings_table.md"
    )
    ap.add_argument(
        "--timeout", type=int, default=1800, help="per-cell timeout in seconds"
    )
    ap.add_argument("--kernel", default="python3")
    ap.add_argument(
        "--interval", type=float, default=0.2, help="memory polling interval in seconds"
    )
    args = ap.parse_args(argv)

    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        print(
            f"time_notebooks: no notebooks to run (missing: {missing})", file=sys.stderr
        )
        return 2
    date, where = dt.date.today().isoformat(), machine()
    print(f"time_notebooks: {len(paths)} notebook(s) on {where}", flush=True)
    timings = []
    for path in paths:
        t = run_notebook(path.resolve(), args.timeout, args.kernel, args.interval)
        mib = f"{t.peak_mib:.0f} MiB" if t.peak_mib is not None else "n/a"
        print(f"  {t.notebook}: {t.seconds:.1f} s, peak {mib}, {t.status}", flush=True)
        timings.append(t)
    text = table(timings, date, where)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"\n{text}\nwritten to {args.out}")
    return 0 if all(t.status == "ok" for t in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
