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

Seconds say as much about the machine as about the notebooks (the same notebooks took twice as
long on one CI machine as on another), so every run also times a fixed **calibration
workload** before and after the notebooks (:func:`calibrate`: training steps of
EfficientNet-Lite0 on a fixed batch at 160 px, the notebooks' kind of work) and reports each
notebook as a multiple of it, and at the speed of the reference machine
(:data:`REFERENCE_CALIBRATION_S`), where the budgets apply.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import threading
import time
from collections.abc import Sequence
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


# --------------------------------------------------------------------------- calibration

CALIBRATION_STEPS = 5
"""Timed training steps (after two untimed ones) in one calibration."""

REFERENCE_CALIBRATION_S = 6.2
"""Seconds of one calibration on the reference machine: the kind CI run 9 ran on (2 cores of an
Intel Xeon with AMX, 24 GiB), measured on a quiet machine of that kind: 6.4 s before and 6.0 s
after the notebooks in the fresh-clone CI run of 3 December 2026. Budgets apply at its speed."""

BUDGET_NOTEBOOK_S = 240
"""Each notebook's budget in seconds at the reference machine's speed (4 minutes)."""
BUDGET_ALL_S = 600
"""The budget of all notebooks together, at the reference machine's speed (10 minutes)."""

_CALIBRATION = f"""
import time, torch, timm
torch.manual_seed(0)
model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(32, 3, 160, 160), torch.randint(0, 1000, (32,))
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
step(); step()
t0 = time.perf_counter()
for _ in range({CALIBRATION_STEPS}):
    step()
print(time.perf_counter() - t0)
"""


def calibrate() -> float:
    """Seconds of the calibration workload here and now: five training steps of
    EfficientNet-Lite0 (architecture only) on 32 random images of 160 px, on the CPU, in a
    fresh Python process like a notebook's kernel."""
    import subprocess

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, "-c", _CALIBRATION],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return float(out.stdout.strip().splitlines()[-1])


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
    from tlutils.reference import cpu_model

    model = cpu_model()
    try:
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


def table(
    timings: list[Timing],
    date: str,
    where: str,
    calibration: Sequence[float] = (),
) -> str:
    """The markdown table (with a caption naming date and machine) of the timings.

    ``calibration`` holds the seconds of :func:`calibrate` measured in the same run (before
    and after the notebooks); with it, each notebook is also given in calibration units and
    at the reference machine's speed, against the budgets.
    """
    unit = sum(calibration) / len(calibration) if calibration else None
    lines = [f"Measured on {date} on {where}."]
    head = "| notebook | wall time (s) | peak memory (MiB) | status |"
    rule = "| --- | ---: | ---: | --- |"
    if unit:
        measured = " and ".join(f"{c:.1f} s" for c in calibration)
        lines += [
            "",
            f"Calibration ({CALIBRATION_STEPS} training steps of Lite0 on 32 images of "
            f"160 px): {measured} in this run, {unit:.1f} s on average; "
            f"{REFERENCE_CALIBRATION_S:.1f} s on the reference machine.",
        ]
        head = (
            "| notebook | wall time (s) | calibration units | at reference speed (s) "
            "| budget (s) | peak memory (MiB) | status |"
        )
        rule = "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
    lines += ["", head, rule]

    def row(name: str, seconds: float, budget: int, mib: str, status: str) -> str:
        if not unit:
            return f"| {name} | {seconds:.0f} | {mib} | {status} |"
        units = seconds / unit
        ref = units * REFERENCE_CALIBRATION_S
        within = "within" if ref <= budget else "OVER"
        return (
            f"| {name} | {seconds:.0f} | {units:.1f} | {ref:.0f} | {budget} ({within}) "
            f"| {mib} | {status} |"
        )

    for t in timings:
        mib = f"{t.peak_mib:.0f}" if t.peak_mib is not None else "n/a"
        lines.append(
            row(f"`{t.notebook}`", t.seconds, BUDGET_NOTEBOOK_S, mib, t.status)
        )
    peaks = [t.peak_mib for t in timings if t.peak_mib is not None]
    total_peak = f"{max(peaks):.0f} (max)" if peaks else "n/a"
    total = sum(t.seconds for t in timings)
    lines.append(
        row(f"**all {len(timings)}**", total, BUDGET_ALL_S, total_peak, "").replace(
            f"| {total:.0f} |", f"| **{total:.0f}** |", 1
        )
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
    calibration = [calibrate()]
    print(f"  calibration: {calibration[0]:.1f} s", flush=True)
    timings = []
    for path in paths:
        t = run_notebook(path.resolve(), args.timeout, args.kernel, args.interval)
        mib = f"{t.peak_mib:.0f} MiB" if t.peak_mib is not None else "n/a"
        print(f"  {t.notebook}: {t.seconds:.1f} s, peak {mib}, {t.status}", flush=True)
        timings.append(t)
    calibration.append(calibrate())
    print(f"  calibration: {calibration[1]:.1f} s", flush=True)
    text = table(timings, date, where, calibration)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"\n{text}\nwritten to {args.out}")
    return 0 if all(t.status == "ok" for t in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
