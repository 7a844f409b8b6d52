"""Reference runs: results that survive interruptions, with their provenance (chapters 2-4).

The course measures everything twice: at the CPU budget of its notebooks, and at a
*reference budget* that gives fine-tuning its fair chance (``scripts/reference_run.py``).
The reference takes hours on a CPU, so every finished run is appended at once to a results
file committed in the repository (one JSON line per run, written, flushed and synced in
one go), and runs already in the file are skipped: the reference can be stopped and
resumed over days, on any machine.

A run is identified by its *key*: its arm, its settings (dataset, sizes, learning rate,
...), its kind (``"final"``: scored on the validation images; ``"trial"``: a
learning-rate trial scored on held-out training images) and its seed. Each row keeps
which images it got right (``correct``, a string of 0/1 in the validation set's fixed
order), so :func:`tlutils.verdict.compare` can pair two arms image by image:
:func:`load_reference` reads the rows back and :func:`runs_of` stacks an arm's seeds.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "LR_LADDER",
    "cpu_model",
    "machine",
    "git_commit",
    "run_key",
    "to_bits",
    "from_bits",
    "append_run",
    "RESULTS_URL",
    "results_file",
    "load_reference",
    "runs_of",
    "finished_arms",
    "summary",
    "compare_arms",
    "Runner",
    "choose_lr",
]

from .rates import LR_LADDER  # noqa: E402  (re-exported: the reference's ladder)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` knows; the
    reference runs and the notebooks' timing table record it (all chapters)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Where a run ran: CPU model, cores, threads, GPU, torch and Python (chapters 2-4)."""
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def git_commit(root: str | Path = ".") -> str:
    """The commit checked out in ``root`` ("unknown" outside a repository) (chapters 2-4)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def run_key(arm: str, settings: dict[str, Any], seed: int, kind: str = "final") -> str:
    """The identity of a run: arm, kind, settings and seed as canonical JSON (chapters 2-4)."""
    return json.dumps(
        {"arm": arm, "kind": kind, "seed": int(seed), "settings": settings},
        sort_keys=True,
        separators=(",", ":"),
    )


def to_bits(correct: Sequence[bool] | np.ndarray) -> str:
    """Per-image correctness as a compact string of 0/1, in image order (chapters 2-4)."""
    return "".join("1" if c else "0" for c in np.asarray(correct, dtype=bool))


def from_bits(bits: str) -> np.ndarray:
    """The boolean array of a string of 0/1 written by :func:`to_bits` (chapters 2-4)."""
    if set(bits) - {"0", "1"}:
        raise ValueError("Per-image correctness must be a string of 0 and 1.")
    return np.frombuffer(bits.encode(), dtype=np.uint8) == ord("1")


def append_run(path: str | Path, row: dict[str, Any]) -> None:
    """Append one run to the results file as one JSON line, flushed and synced (chapters 2-4).

    The line is written with a single call; if an earlier writer died mid-line, the new
    row starts on a line of its own (the broken line is skipped by
    :func:`load_reference`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, sort_keys=True) + "\n"
    with open(path, "ab") as f:
        if f.tell() > 0:
            with open(path, "rb") as check:
                check.seek(-1, os.SEEK_END)
                if check.read(1) != b"\n":
                    line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


RESULTS_URL = (
    "https://raw.githubusercontent.com/tl-course/transfer-learning-with-pytorch/"
    "main/results/reference.jsonl"
)
"""Where the committed reference results are published (the repository of ``_config.yml``;
a test checks that both agree)."""


def results_file(local: str | Path = "../results/reference.jsonl") -> Path:
    """The reference results (chapters 2-4): ``local`` in a clone of the course's
    repository (the notebooks' folder is beside ``results/``), or, where there is none
    (Colab), the published file, downloaded once into the tlutils cache."""
    local = Path(local)
    if local.is_file():
        return local
    import pooch

    from .datasets import cache_dir

    try:
        return Path(
            pooch.retrieve(RESULTS_URL, known_hash=None, fname="reference.jsonl",
                           path=cache_dir() / "results", progressbar=False)
        )  # fmt: skip
    except Exception as err:  # offline, or the address moved
        raise FileNotFoundError(
            f"No reference results at {local.resolve()}, and downloading {RESULTS_URL} "
            f"failed ({type(err).__name__}). Clone the course's repository and run the "
            "notebook from its notebooks/ folder."
        ) from err


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its ``correct*`` strings as boolean arrays."""
    out = dict(row)
    for name, value in row.items():
        if name.startswith("correct") and isinstance(value, str):
            out[name] = from_bits(value)
    return out


def load_reference(path: str | Path) -> list[dict[str, Any]]:
    """The runs of a results file, oldest first, ready for the verdict rule (chapters 2-4).

    Every ``correct*`` field (``correct``; ``correct_ood`` in chapter 4) becomes a boolean
    array in the validation set's order; pass the arrays of two arms to
    :func:`tlutils.verdict.compare` (or stack an arm's seeds with :func:`runs_of`). A
    missing file has no runs; a damaged line (a writer killed mid-line) is skipped with a
    warning. A key that occurs twice keeps its first row.
    """
    path = Path(path)
    if not path.is_file():
        return []
    rows, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = _decoded(json.loads(line))
            key = row["key"]
        except (ValueError, KeyError, TypeError):
            warnings.warn(f"{path}:{number}: a damaged line, skipped.", stacklevel=2)
            continue
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


def runs_of(
    rows: Sequence[dict[str, Any]],
    arm: str,
    field: str = "correct",
    kind: str = "final",
    **where: Any,
) -> np.ndarray:
    """One arm's runs as ``[runs, images]`` (0/1), sorted by seed, for the verdict rule
    (chapters 2-4).

    ``where`` selects rows by a top-level field (``dataset="eurosat"``) or a setting
    (``epochs=3``); every run must have been scored on the same images.
    """
    picked = [
        r
        for r in rows
        if r["arm"] == arm
        and r.get("kind", "final") == kind
        and all(r.get(k, r["settings"].get(k)) == v for k, v in where.items())
    ]
    if not picked:
        raise ValueError(f"No {kind} runs of arm {arm!r} with {where}.")
    picked.sort(key=lambda r: r["seed"])
    return np.stack([np.asarray(r[field], dtype=float) for r in picked])


def finished_arms(rows: Sequence[dict[str, Any]], runs: int = 3) -> set[str]:
    """The arms whose final runs are all in ``rows`` (chapters 2-4): ``runs`` seeds of a
    trained arm (one whose settings name a learning rate), the one run of a probe (which
    is deterministic). An arm still being run is left out, so that no verdict pairs three
    seeds with two."""
    seeds: dict[str, set[int]] = {}
    trained: set[str] = set()
    for r in rows:
        if r.get("kind", "final") == "final":
            seeds.setdefault(r["arm"], set()).add(r["seed"])
            if "lr" in r["settings"]:
                trained.add(r["arm"])
    return {a for a, s in seeds.items() if len(s) >= (runs if a in trained else 1)}


def summary(rows: Sequence[dict[str, Any]], field: str = "correct"):
    """One line per arm and setting: runs, mean accuracy with its 95% interval (the
    verdict rule's bootstrap over runs and images), seconds per run, machine (chapters 2-4).

    Only ``"final"`` runs count; ``field="correct_ood"`` summarises chapter 4's corrupted
    images. Returns a pandas DataFrame.
    """
    import pandas as pd

    from .verdict import compare

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("kind", "final") == "final" and field in row:
            settings = json.dumps(row["settings"], sort_keys=True)
            groups.setdefault(f"{row['arm']}|{settings}", []).append(row)
    lines = []
    for runs in groups.values():
        runs = sorted(runs, key=lambda r: r["seed"])
        scores = [np.asarray(r[field], dtype=float) for r in runs]
        v = compare(scores, [np.zeros_like(s) for s in scores])
        first = runs[0]
        lines.append(
            {
                "chapter": first.get("chapter"),
                "case": first.get("case"),
                "dataset": first.get("dataset"),
                "arm": first["arm"],
                "lr": f"{lr:g}" if (lr := first["settings"].get("lr")) else "-",
                "runs": len(runs),
                "images": int(scores[0].size),
                "accuracy": v.difference,
                "95% interval": f"{v.low:.3f} to {v.high:.3f}",
                "seconds per run": float(np.mean([r["seconds"] for r in runs])),
                "machine": first.get("machine", {}).get("cpu"),
            }
        )
    return pd.DataFrame(lines)


def compare_arms(
    rows: Sequence[dict[str, Any]], a: str, b: str, field: str = "correct"
):
    """Arm ``a`` against arm ``b`` by the course's verdict rule, paired over seeds and
    images (:func:`tlutils.verdict.compare`); ``None`` while either has no final run in
    ``rows`` (chapters 2-4)."""
    from .verdict import compare

    done = {r["arm"] for r in rows if r.get("kind", "final") == "final" and field in r}
    if not {a, b} <= done:
        return None
    return compare(runs_of(rows, a, field), runs_of(rows, b, field))


def _utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Runner:
    """Runs that are done once: each result appended to ``path`` at once (chapters 2-4).

    ``provenance`` (commit, machine, ...) is stored with every row; ``code`` (a digest
    of the code that makes the results, :func:`tlutils.recipe.code_digest`) goes into
    every run's settings, so a run made by other code is another run. With ``dry=True``
    nothing runs: :meth:`run` returns the stored row or ``None``, and :attr:`missing`
    lists what a real run would do (``--list``). ``on_append(row)`` is called after
    every new row is safely on disk (e.g. to commit the file).
    """

    def __init__(
        self,
        path: str | Path,
        provenance: dict[str, Any] | None = None,
        dry: bool = False,
        on_append: Callable[[dict[str, Any]], None] | None = None,
        log: Callable[[str], None] = print,
        code: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.code = code
        self.provenance = provenance or {}
        self.dry = dry
        self.on_append = on_append
        self.log = log
        self.done = {row["key"]: row for row in load_reference(self.path)}
        self.missing: list[str] = []
        self.ran = 0

    def run(
        self,
        arm: str,
        settings: dict[str, Any],
        seed: int,
        work: Callable[[], dict[str, Any]],
        kind: str = "final",
        **fields: Any,
    ) -> dict[str, Any] | None:
        """The row of this run: read from the file, or made by ``work()`` and appended.

        ``work`` returns ``{"correct": booleans, ...}``; further ``correct_*`` arrays are
        stored as 0/1 strings too (each with its ``accuracy_*``), other values as they
        are. ``fields`` (chapter, case, dataset) go into the row, outside the key.
        """
        if self.code is not None:  # the code is part of a run's identity
            settings = {**settings, "code": self.code}
        key = run_key(arm, settings, seed, kind)
        if key in self.done:
            return self.done[key]
        if self.dry:
            if key not in self.missing:
                self.missing.append(key)
            return None
        started, start = _utc(), time.perf_counter()
        out = work()
        seconds = time.perf_counter() - start
        row: dict[str, Any] = {
            "key": key,
            "arm": arm,
            "kind": kind,
            "seed": int(seed),
            "settings": settings,
            **fields,
            "started": started,
            "finished": _utc(),
            "seconds": round(seconds, 2),
            **self.provenance,
        }
        for name, value in out.items():
            if name.startswith("correct"):
                correct = np.asarray(value, dtype=bool)
                row[name] = to_bits(correct)
                suffix = name[len("correct") :]
                row[f"accuracy{suffix}"] = float(correct.mean())
                row[f"images{suffix}"] = int(correct.size)
            else:
                row[name] = value
        append_run(self.path, row)
        decoded = _decoded(row)
        self.done[key] = decoded
        self.ran += 1
        self.log(
            f"{row['finished']} {kind} {arm} seed {seed}: accuracy "
            f"{row['accuracy']:.4f} in {seconds:.0f} s"
        )
        if self.on_append is not None:
            self.on_append(row)
        return decoded


def choose_lr(
    runner: Runner,
    arm: str,
    settings: dict[str, Any],
    grid: Sequence[float],
    trial: Callable[[float], dict[str, Any]],
    max_widen: int = 3,
    ladder: Sequence[float] = LR_LADDER,
    **fields: Any,
) -> tuple[float | None, dict[float, float], bool]:
    """The course's rate chooser (:func:`tlutils.rates.choose_lr`: held-out accuracy, ties
    to the larger rate, the grid widened while its best is at an edge) with every trial a
    stored run of ``runner`` (chapters 2-4).

    ``trial(lr)`` trains on one part of the training images and returns ``{"correct":
    ...}`` on the other part; it runs as a ``"trial"`` run with seed 0, once. Returns the
    chosen rate (``None`` in a dry runner with trials missing), every rate's score, and
    whether the chosen rate is still at an edge of what was tried.
    """
    from .rates import choose_lr as choose

    def score(lr: float) -> float | None:
        row = runner.run(
            arm, {**settings, "lr": lr}, 0, lambda: trial(lr), kind="trial", **fields
        )
        return None if row is None else float(np.mean(row["correct"]))

    chosen = choose(score, grid, max_widen, ladder)
    if chosen is None:
        return None, {}, True
    return chosen.lr, chosen.scores, chosen.at_edge
