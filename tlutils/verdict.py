"""The course's one verdict rule: is arm A better than arm B, equivalent, or can't we tell?

Every comparison in the book (chapters 2-5), in ``diagnose``, ``train_folder`` and the
self-checks goes through :func:`compare`. It is a **paired** comparison: both arms were
scored on the same validation images in each run (a seed or a data draw), so the rule looks
at the per-image differences. A two-level bootstrap resamples the runs and, inside each run,
the images, and gives the mean difference ``A - B`` with a 95% confidence interval. Then:

* **A better**: the whole interval is above 0;
* **B better**: the whole interval is below 0;
* **equivalent**: the interval lies inside ``±margin`` (:data:`MARGIN`, one point);
* **inconclusive**: anything else. It is *not* a negative result: the data cannot tell.

A deterministic arm (a probe on cached features) is one run: its interval comes from the
images alone. Arms known only by their accuracy per run can be compared with one "image" per
run (shape ``[runs, 1]``): then only the runs are resampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MARGIN", "LEVEL", "Verdict", "compare", "as_runs", "verdict_table"]

#: Two arms whose whole 95% interval lies within this many accuracy points (as a fraction:
#: 0.01 = 1 point) of each other are called equivalent.
MARGIN = 0.01
#: The confidence level of the intervals.
LEVEL = 0.95
#: Bootstrap resamples; with the fixed seed below, the same inputs give the same interval.
N_BOOT = 4000
_SEED = 0


def as_runs(scores: Any) -> list[np.ndarray]:
    """Per-image scores as one float array per run (chapter 3).

    Accepts an array ``[images]`` (one run, e.g. a deterministic probe), an array
    ``[runs, images]``, or a sequence of 1-D arrays (runs scored on different numbers of
    images). Booleans (correct or not) become 0/1.
    """
    if isinstance(scores, np.ndarray) or np.isscalar(scores):
        array = np.asarray(scores, dtype=float)
        if array.ndim == 0:
            array = array.reshape(1, 1)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2:
            raise ValueError(
                f"Per-image scores must be [images] or [runs, images]; got shape {array.shape}."
            )
        runs = list(array)
    else:
        runs = [np.atleast_1d(np.asarray(run, dtype=float)) for run in scores]
    if not runs or any(run.ndim != 1 or run.size == 0 for run in runs):
        raise ValueError(
            "Give each run's per-image scores as a non-empty 1-D array (1 = correct)."
        )
    return runs


def _pair(a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
    """Per-image differences run by run; a single run on either side pairs with every run."""
    if len(a) == 1 and len(b) > 1:
        a = a * len(b)
    if len(b) == 1 and len(a) > 1:
        b = b * len(a)
    if len(a) != len(b):
        raise ValueError(
            f"Pair the arms run by run (seed i with seed i): got {len(a)} and {len(b)} "
            "runs. A deterministic arm may be given as a single run."
        )
    diffs = []
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            raise ValueError(
                f"Run {i}: the arms were scored on {x.size} and {y.size} images; a paired "
                "comparison needs both scored on the same validation images, in the same "
                "order."
            )
        diffs.append(x - y)
    return diffs


def _boot_means(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap means of ``d``. Differences of correctness take at most three
    values (-1, 0, 1), so the images are resampled as counts of each value: the same
    distribution as drawing images, at a cost that does not grow with their number."""
    values, counts = np.unique(d, return_counts=True)
    if len(values) <= 256:
        draws = rng.multinomial(len(d), counts / len(d), size=n_boot)
        return draws @ values / len(d)
    return np.array([rng.choice(d, len(d)).mean() for _ in range(n_boot)])


@dataclass(frozen=True)
class Verdict:
    """The result of :func:`compare`: ``A - B`` as fractions (0.01 = 1 point)."""

    difference: float  # mean of A - B over runs and images
    low: float  # lower end of the 95% interval
    high: float  # upper end
    verdict: str  # "A better", "B better", "equivalent" or "inconclusive"
    runs: int  # number of paired runs (seeds or draws)
    images: int  # validation images per run (the smallest run's count)
    wins: int  # runs where A's accuracy was above B's
    losses: int  # runs where A's accuracy was below B's
    margin: float = MARGIN

    @property
    def sure(self) -> bool:
        """True when the rule says something (better or equivalent), not inconclusive."""
        return self.verdict != "inconclusive"

    @property
    def not_worse(self) -> bool:
        """A is not worse than B by more than the margin (the interval's low end is above
        ``-margin``): "at least as good as", within one point."""
        return self.low > -self.margin

    def interval(self) -> str:
        """The interval in points, e.g. ``"+1.2 to +4.0 points"``."""
        return f"{100 * self.low:+.1f} to {100 * self.high:+.1f} points"

    def sentence(self, a: str = "A", b: str = "B") -> str:
        """The verdict as a plain sentence naming the arms (for prose and printouts)."""
        runs = ""
        if self.runs > 1:
            wins = self.wins if self.difference >= 0 else self.losses
            runs = f" (ahead in {wins} of {self.runs} runs)"
        if self.verdict == "A better":
            return (
                f"{a} is better than {b} by {100 * self.difference:.1f} points{runs}; "
                f"95% interval {self.interval()}"
            )
        if self.verdict == "B better":
            flipped = f"{-100 * self.high:+.1f} to {-100 * self.low:+.1f} points"
            return (
                f"{b} is better than {a} by {-100 * self.difference:.1f} points{runs}; "
                f"95% interval {flipped}"
            )
        if self.verdict == "equivalent":
            return (
                f"{a} and {b} are equivalent (within ±{100 * self.margin:g} point): "
                f"{a} minus {b} is {self.interval()}"
            )
        return (
            f"inconclusive: {a} minus {b} is {self.interval()}, too wide to tell which "
            "is better"
        )

    def short(self) -> str:
        """A table cell: the verdict word(s) for A against B."""
        return {
            "A better": "better",
            "B better": "worse",
            "equivalent": "equivalent",
            "inconclusive": "inconclusive",
        }[self.verdict]


def compare(
    a: Any,
    b: Any,
    margin: float = MARGIN,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = _SEED,
) -> Verdict:
    """The course's verdict rule: arm ``a`` against arm ``b``, paired (chapter 3).

    ``a`` and ``b`` hold per-image scores (1 = correct), as accepted by :func:`as_runs`:
    run ``i`` of both arms must be scored on the same images in the same order. The
    interval is a percentile bootstrap that resamples the runs and, inside each resampled
    run, its images, ``n_boot`` times with a fixed ``seed`` (same inputs, same interval).
    """
    if not 0 < level < 1:
        raise ValueError(f"level is a probability such as 0.95; got {level}.")
    if margin < 0:
        raise ValueError(
            f"margin is a non-negative fraction such as 0.01; got {margin}."
        )
    diffs = _pair(as_runs(a), as_runs(b))
    rng = np.random.default_rng(seed)
    # Inside each run: n_boot bootstrap means of its image differences.
    per_run = np.stack([_boot_means(d, n_boot, rng) for d in diffs])  # [runs, n_boot]
    picks = rng.integers(0, len(diffs), size=(n_boot, len(diffs)))  # runs, resampled
    boot = per_run[picks, np.arange(n_boot)[:, None]].mean(1)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    means = np.array([d.mean() for d in diffs])
    if low > 0:
        verdict = "A better"
    elif high < 0:
        verdict = "B better"
    elif -margin < low and high < margin:
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    return Verdict(
        difference=float(means.mean()),
        low=float(low),
        high=float(high),
        verdict=verdict,
        runs=len(diffs),
        images=min(len(d) for d in diffs),
        wins=int((means > 0).sum()),
        losses=int((means < 0).sum()),
        margin=margin,
    )


def verdict_table(rows: Sequence[tuple[str, str, Verdict]]):
    """One results table for a chapter page: arm against arm, difference, interval, verdict.

    ``rows`` holds ``(arm A, arm B, verdict)``; returns a pandas DataFrame (the book shows it
    as a table, and ``glue`` pastes it onto the chapter page).
    """
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "A": a,
                "B": b,
                "A - B (points)": f"{100 * v.difference:+.1f}",
                "95% interval": v.interval(),
                "runs x images": f"{v.runs} x {v.images}",
                "verdict": {
                    "A better": f"{a} better",
                    "B better": f"{b} better",
                }.get(v.verdict, v.verdict),
            }
            for a, b, v in rows
        ]
    )
