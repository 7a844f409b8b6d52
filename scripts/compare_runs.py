#!/usr/bin/env python3
"""Run notebooks twice from an empty feature cache and compare every number they print.

A course notebook must print the same measured numbers every time it runs on the same
machine: the same seed gives the same verdict. This script executes each notebook twice in
a row, each time in a fresh ``python3`` kernel (nbclient) with ``notebooks/`` as working
directory and a new, empty ``TLUTILS_CACHE`` folder (so both runs extract their features),
without changing the notebook files. It then compares, cell by cell, every number in the
text the code cells printed (stdout streams and ``text/plain`` results; not stderr, where
progress bars go, and not images).

Timings differ from run to run by nature and are ignored, by one explicit rule: a number
followed by a unit of time or speed (``s``, ``ms``, ``sec``, ``seconds``, ``min``,
``it/s``, ``s/it``, ``x`` for a speed-up, ``images/s``) is a timing. So is every number
on a line that mentions ``seconds``, ``wall`` or ``CPU so far``, every number in a
table column whose header mentions ``seconds``, ``latency`` or ``ms``, and every number in
a table (up to the next blank line) whose first header word does. Everything else
that differs is reported as a defect.

Usage::

    python scripts/compare_runs.py                      # every notebooks/*.ipynb
    python scripts/compare_runs.py notebooks/ch2_*.ipynb --out /tmp/compare.md
    python scripts/compare_runs.py --executed RUN_A RUN_B   # compare two finished runs

``--executed`` compares notebooks that were already executed elsewhere, e.g. the
``_build/jupyter_execute/notebooks`` folders of two fresh-clone CI runs (each book build
executes every notebook with an empty feature cache), without running anything again.

Exit status 0 if every notebook ran twice and printed the same numbers, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?(?![\d.])", re.I)
TIMING_UNIT = re.compile(r"\s?(?:ms|s|sec|seconds|min|it/s|s/it|x|images/s)\b", re.I)
TIMING_LINE = re.compile(r"seconds|\bwall\b|CPU so far", re.I)
TIMING_HEADER = re.compile(r"seconds|latency|\bms\b", re.I)


@dataclass
class Comparison:
    """What two runs of one notebook printed, compared number by number."""

    name: str
    cells: int = 0
    equal: int = 0
    timings: int = 0
    differences: list[str] = field(default_factory=list)
    failure: str = ""

    @property
    def ok(self) -> bool:
        return not self.failure and not self.differences

    def line(self) -> str:
        if self.failure:
            return f"{self.name}: FAILED: {self.failure}"
        return (
            f"{self.name}: {self.cells} cells, {self.equal} numbers equal, "
            f"{self.timings} timings ignored, {len(self.differences)} differ"
        )


def _merged_streams(outputs: list) -> list:
    """Drop the repeated stdout chunks that MyST-NB leaves in an executed notebook.

    Its saved notebooks hold a cell's stdout once merged (first output) and then again
    chunk by chunk: the later chunks are the tail of the first. The rendered page shows
    the text once, so the comparison should too.
    """
    streams = [
        i
        for i, o in enumerate(outputs)
        if o.get("output_type") == "stream" and o.get("name") == "stdout"
    ]
    if len(streams) < 2:
        return outputs
    first = "".join(outputs[streams[0]].get("text", ""))
    rest = "".join("".join(outputs[i].get("text", "")) for i in streams[1:])
    if rest and first != rest and first.endswith(rest):
        return [o for i, o in enumerate(outputs) if i not in streams[1:]]
    return outputs


def cell_text(cell) -> str:
    """The text a code cell printed: stdout and text/plain results, in order."""
    parts = []
    for output in _merged_streams(cell.get("outputs", [])):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            parts.append("".join(output.get("text", "")))
        elif output.get("output_type") in ("execute_result", "display_data"):
            parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "".join(parts)


def _timing_columns(lines: list[str]) -> list[tuple[int, int]]:
    """Character spans of table columns whose header names a time."""
    spans = []
    for line in lines:
        for match in re.finditer(r"\S+(?: \S+)*", line):
            if TIMING_HEADER.search(match.group()):
                spans.append((match.start(), match.end()))
    return spans


# A tqdm progress bar: "epochs: 100%|####| 1/1 [00:01<00:00, 1.17s/it, ...]". Its rates,
# times and the number of redraws depend on the machine's speed, so bars are skipped.
PROGRESS_BAR = re.compile(r"\|[^|]*\| *\d+/\d+ \[")


def numbers(text: str) -> list[tuple[str, bool, str]]:
    """``(number, is_timing, line)`` for every number in ``text``, in order."""
    lines = [
        line
        for line in re.split(r"\r|\n", text.replace("\r\n", "\n"))
        if not PROGRESS_BAR.search(line)
    ]
    spans = _timing_columns(lines)
    found, timing_block = [], False
    for line in lines:
        first_word = line.split(maxsplit=1)[0] if line.strip() else ""
        if not line.strip():
            timing_block = False  # a blank line ends a table
        elif TIMING_HEADER.search(first_word):
            timing_block = True  # a table whose title is a time: every number in it
        timing_line = timing_block or bool(TIMING_LINE.search(line))
        for match in NUMBER.finditer(line):
            after = line[match.end() :]
            in_column = any(a - 2 <= match.start() <= b + 2 for a, b in spans)
            timing = timing_line or in_column or bool(TIMING_UNIT.match(after))
            found.append((match.group(), timing, line.strip()))
    return found


def compare(first, second, name: str = "notebook") -> Comparison:
    """Compare the numbers printed by two executed copies of one notebook."""
    result = Comparison(name)
    cells_a = [c for c in first.cells if c.cell_type == "code"]
    cells_b = [c for c in second.cells if c.cell_type == "code"]
    if len(cells_a) != len(cells_b):
        result.differences.append(f"{len(cells_a)} vs {len(cells_b)} code cells")
        return result
    result.cells = len(cells_a)
    for index, (a, b) in enumerate(zip(cells_a, cells_b, strict=True)):
        nums_a, nums_b = numbers(cell_text(a)), numbers(cell_text(b))
        if len(nums_a) != len(nums_b):
            result.differences.append(
                f"cell {index}: {len(nums_a)} vs {len(nums_b)} numbers printed"
            )
            continue
        for (x, timing, line_a), (y, _, line_b) in zip(nums_a, nums_b, strict=True):
            if timing:
                result.timings += 1
            elif x == y:
                result.equal += 1
            else:
                result.differences.append(
                    f"cell {index}: {line_a[:70]!r} vs {line_b[:70]!r}"
                )
    return result


def execute(path: Path, timeout: int):
    """Run a copy of the notebook in a fresh kernel with an empty feature cache."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="tlutils-cache-") as cache:
        previous = os.environ.get("TLUTILS_CACHE")
        os.environ["TLUTILS_CACHE"] = cache
        try:
            client = NotebookClient(
                notebook,
                timeout=timeout,
                kernel_name="python3",
                resources={"metadata": {"path": str(path.parent)}},
            )
            client.execute()
        finally:
            if previous is None:
                os.environ.pop("TLUTILS_CACHE", None)
            else:
                os.environ["TLUTILS_CACHE"] = previous
    return notebook


def run_twice(path: Path, timeout: int) -> Comparison:
    """Execute ``path`` twice and compare the runs; a failed run is reported, not raised."""
    runs = []
    for _ in range(2):
        try:
            runs.append(execute(path, timeout))
        except Exception as err:  # the report names it; the other notebooks still run
            last = str(err).strip().splitlines()[-1:] or [type(err).__name__]
            return Comparison(path.stem, failure=last[0][:200])
    return compare(*runs, name=path.stem)


def compare_files(a: Path, b: Path) -> Comparison:
    """Compare two executed copies of one notebook (``--executed``)."""
    import nbformat

    if not b.exists():
        return Comparison(a.stem, failure=f"{b} is missing")
    return compare(
        nbformat.read(a, as_version=4), nbformat.read(b, as_version=4), name=a.stem
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--executed",
        nargs=2,
        type=Path,
        metavar=("RUN_A", "RUN_B"),
        help="compare the executed notebooks of two folders instead of running them",
    )
    args = parser.parse_args(argv)
    if args.executed:
        jobs = [
            lambda a=a: compare_files(a, args.executed[1] / a.name)
            for a in sorted(args.executed[0].glob("*.ipynb"))
        ]
    else:
        paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
        jobs = [lambda p=p: run_twice(p.resolve(), args.timeout) for p in paths]
    if not jobs:
        parser.error("no notebooks to compare")
    report, results = [], []
    for job in jobs:
        result = job()
        results.append(result)
        lines = [result.line(), *(f"  {d}" for d in result.differences)]
        report.extend(lines)
        print("\n".join(lines), flush=True)
    if args.out:
        args.out.write_text("```\n" + "\n".join(report) + "\n```\n")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
