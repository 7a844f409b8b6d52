"""The course's one verdict rule: is arm A better than arm B, equivalent, or unknown?

Taught in chapter 3 and used by every comparison in the book (chapters 2-5), in
``diagnose``, ``train_folder`` and the self-checks: :func:`compare`. It is a **paired**
comparison: both arms were scored on the same validation images in each run (a seed or
a data draw), so the rule looks at the per-image differences. A two-level bootstrap
resamples the runs and, inside each run, the images, and gives the mean difference
``A - B`` with a 95% confidence interval ``[low, high]``. :func:`classify` then names
exactly one outcome (``m`` is the margin, :data:`MARGIN`, one point):

==================  ==================================================================
outcome             the interval ``[low, high]``
==================  ==================================================================
A better            above 0 (``low > 0``) and reaching the margin (``high >= m``)
A slightly better   above 0 and inside the margin (``high < m``): better, by < 1 point
equivalent          contains 0 and lies inside ``±m`` (``-m < low``, ``high < m``)
B slightly better   below 0 and inside the margin (``high < 0``, ``low > -m``)
B better            below 0 (``high < 0``) and reaching the margin (``low <= -m``)
inconclusive        contains 0 and reaches the margin on at least one side
==================  ==================================================================

*Inconclusive* is not a negative result: the data cannot tell.

**Not worse** (non-inferiority) is a named reading of the same interval, not another
rule: A is *at least as good as B, within the margin* when ``low > -m``
(:attr:`Verdict.not_worse`, worded by :meth:`Verdict.not_worse_sentence`). Part 5
(chapter 5: ``train_folder``'s promise that the saved model is not worse than its probe)
uses this reading. It holds for both "A" outcomes, *equivalent*, *B slightly better*
and an inconclusive interval that reaches the margin above only; it fails for
*B better* and for any interval that reaches ``-m`` or below.

A deterministic arm (a probe on cached features) is one run: its interval comes from the
images alone. Arms known only by their accuracy per run can be compared with one "image"
per run (shape ``[runs, 1]``): then only the runs are resampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "MARGIN",
    "LEVEL",
    "OUTCOMES",
    "Verdict",
    "classify",
    "compare",
    "as_runs",
    "verdict_table",
]

#: Two arms whose whole 95% interval lies within this many accuracy points (as a
#: fraction: 0.01 = 1 point) of each other are called equivalent.
MARGIN = 0.01
#: The confidence level of the intervals.
LEVEL = 0.95
#: The rule's six outcomes, from A's side to B's; exactly one holds for any interval.
OUTCOMES: tuple[str, ...] = (
    "A better",
    "A slightly better",
    "equivalent",
    "B slightly better",
    "B better",
    "inconclusive",
)
#: Bootstrap resamples; with the fixed seed below, the same inputs give the same
#: interval.
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
                "Per-image scores must be [images] or [runs, images]; got shape "
                f"{array.shape}."
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
    """Per-image differences run by run; a single run on either side pairs with every
    run."""
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
                f"Run {i}: the arms were scored on {x.size} and {y.size} images; a "
                "paired comparison needs both scored on the same validation images, in "
                "the same order."
            )
        diffs.append(x - y)
    return diffs


def _boot_means(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap means of ``d``. Differences of correctness take at most
    three values (-1, 0, 1), so the images are resampled as counts of each value: the
    same distribution as drawing images, at a cost that does not grow with their
    number."""
    values, counts = np.unique(d, return_counts=True)
    if len(values) <= 256:
        draws = rng.multinomial(len(d), counts / len(d), size=n_boot)
        return draws @ values / len(d)
    return np.array([rng.choice(d, len(d)).mean() for _ in range(n_boot)])


def classify(low: float, high: float, margin: float = MARGIN) -> str:
    """The verdict rule's outcome for an interval ``[low, high]`` of ``A - B``
    (chapter 3).

    Returns one of :data:`OUTCOMES`; the tests in the module's docstring exclude each
    other, so exactly one holds for any interval. An interval with ``low > 0`` is never
    "equivalent", however narrow: it is "A slightly better".
    """
    if not low <= high:  # also refuses NaN
        raise ValueError(f"An interval needs low <= high; got {low} to {high}.")
    if not margin >= 0:
        raise ValueError(
            f"margin is a non-negative fraction such as 0.01; got {margin}."
        )
    if low > 0:
        return "A better" if high >= margin else "A slightly better"
    if high < 0:
        return "B better" if low <= -margin else "B slightly better"
    if -margin < low and high < margin:
        return "equivalent"
    return "inconclusive"


def _points(x: float) -> str:
    """A fraction as signed points with one decimal: ``0.012 -> "+1.2"``."""
    return f"{100 * x:+.1f}"


def _margin_words(margin: float) -> str:
    """The margin in words: ``"1 point"``, ``"0.5 points"``."""
    number = f"{100 * margin:g}"
    return f"{number} point" if number == "1" else f"{number} points"


_SHORT = {
    "A better": "better",
    "A slightly better": "slightly better",
    "equivalent": "equivalent",
    "B slightly better": "slightly worse",
    "B better": "worse",
    "inconclusive": "inconclusive",
}


@dataclass(frozen=True)
class Verdict:
    """The result of :func:`compare` (chapter 3): ``A - B`` as fractions (0.01 = 1
    point).

    ``verdict`` is one of :data:`OUTCOMES`, always ``classify(low, high, margin)``.
    """

    difference: float  # mean of A - B over runs and images
    low: float  # lower end of the 95% interval
    high: float  # upper end
    verdict: str  # one of OUTCOMES: "A better", ..., "inconclusive"
    runs: int  # number of paired runs (seeds or draws)
    images: int  # validation images per run (the smallest run's count)
    wins: int  # runs where A's accuracy was above B's
    losses: int  # runs where A's accuracy was below B's
    margin: float = MARGIN
    level: float = LEVEL  # the confidence level of the interval

    def __post_init__(self) -> None:
        """Refuse a verdict that the interval does not give: one rule, no exceptions."""
        expected = classify(self.low, self.high, self.margin)
        if self.verdict != expected:
            raise ValueError(
                f"The interval {self.interval()} with margin ±"
                f"{_margin_words(self.margin)} is {expected!r}, not {self.verdict!r}."
            )

    @property
    def a_better(self) -> bool:
        """A is better than B: the whole interval is above 0 (by any amount)."""
        return self.low > 0

    @property
    def b_better(self) -> bool:
        """B is better than A: the whole interval is below 0 (by any amount)."""
        return self.high < 0

    @property
    def sure(self) -> bool:
        """True when the rule says something, i.e. the outcome is not inconclusive."""
        return self.verdict != "inconclusive"

    @property
    def not_worse(self) -> bool:
        """The non-inferiority reading of the same interval (chapter 5's promise): A is
        at least as good as B, within the margin, when the low end is above
        ``-margin``. Not a second rule."""
        return self.low > -self.margin

    def interval(self) -> str:
        """The interval in points, e.g. ``"+1.2 to +4.0 points"``."""
        return f"{_points(self.low)} to {_points(self.high)} points"

    def _span(self, a: str, b: str) -> str:
        """``"A minus B is -0.2 to +1.6 points (95% interval)"``."""
        return f"{a} minus {b} is {self.interval()} ({100 * self.level:g}% interval)"

    def _lead(self, b_side: bool) -> str:
        """The winner's lead, its interval and its runs, seen from the winner's side."""
        sign = -1 if b_side else 1
        low, high = sorted((sign * self.low, sign * self.high))
        runs = ""
        if self.runs > 1:
            ahead = self.losses if b_side else self.wins
            runs = f"; ahead in {ahead} of {self.runs} runs"
        return (
            f"{100 * sign * self.difference:.1f} points "
            f"({100 * self.level:g}% interval {_points(low)} to {_points(high)} "
            f"points{runs})"
        )

    def _reaches(self) -> tuple[bool, bool]:
        """Does the interval reach the margin above (``high >= m``), below
        (``low <= -m``)?"""
        return self.high >= self.margin, self.low <= -self.margin

    def _beyond(self) -> str:
        """Where an interval reaches the margin: ``"+1 point"``, ``"-1 point"``, or
        both."""
        words = _margin_words(self.margin)
        above, below = self._reaches()
        if above and below:
            return f"both -{100 * self.margin:g} and +{words}"
        return f"+{words}" if above else f"-{words}"

    def _who_may_be_better(self, a: str, b: str) -> str:
        """Which arm an inconclusive interval leaves room for, by the margin or more."""
        above, below = self._reaches()
        if above and below:
            return f"either {a} or {b} may be better"
        winner, loser = (a, b) if above else (b, a)
        return f"{winner} may be as good as {loser} or better"

    def sentence(self, a: str = "A", b: str = "B") -> str:
        """The verdict as a plain sentence naming the arms (for prose and printouts).

        e.g. ``"A is better than B by 2.1 points (95% interval +1.2 to +3.0 points;
        ahead in 3 of 3 runs)"``; the module's docstring lists the outcomes.
        """
        words = _margin_words(self.margin)
        if self.verdict == "equivalent":
            return f"{a} and {b} are equivalent: {self._span(a, b)}, inside ±{words}"
        if self.verdict == "inconclusive":
            return (
                f"can't tell (inconclusive): {self._span(a, b)}, which includes 0 and "
                f"reaches beyond {self._beyond()}: {self._who_may_be_better(a, b)}"
            )
        b_side = self.verdict.startswith("B")
        winner, loser = (b, a) if b_side else (a, b)
        if "slightly" in self.verdict:
            less = "a point" if words == "1 point" else words
            return (
                f"{winner} is better than {loser}, but by less than {less}: "
                f"{self._lead(b_side)}"
            )
        return f"{winner} is better than {loser} by {self._lead(b_side)}"

    def not_worse_sentence(self, a: str = "A", b: str = "B") -> str:
        """The non-inferiority reading (:attr:`not_worse`) as a sentence (chapter 5).

        Not a second rule: the same interval, read as "is A at least as good as B,
        within the margin?" (its low end above ``-margin``).
        """
        words = _margin_words(self.margin)
        if self.not_worse:
            return (
                f"{a} is not worse than {b} (at least as good, within {words}): "
                f"{self._span(a, b)}, its low end above -{words}"
            )
        return (
            f"{a} may be worse than {b} by {words} or more: {self._span(a, b)}, "
            f"its low end at or below -{words}"
        )

    def short(self) -> str:
        """A table cell for A against B (chapter 3): ``"better"``, ``"slightly
        better"``, ``"equivalent"``, ``"slightly worse"``, ``"worse"`` or
        ``"inconclusive"``."""
        return _SHORT[self.verdict]

    def label(self, a: str = "A", b: str = "B") -> str:
        """The outcome naming the arms, for tables (chapter 3): ``"cut better"``,
        ``"probe slightly better (by < 1 point)"``, ``"inconclusive (cut may be
        better)"``."""
        words = _margin_words(self.margin)
        if self.verdict == "equivalent":
            return f"equivalent (inside ±{words})"
        if self.verdict == "inconclusive":
            above, below = self._reaches()
            who = "either" if above and below else (a if above else b)
            return f"inconclusive ({who} may be better)"
        winner = b if self.verdict.startswith("B") else a
        if "slightly" in self.verdict:
            return f"{winner} slightly better (by < {words})"
        return f"{winner} better"


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
    interval is a percentile bootstrap that resamples the runs and, inside each
    resampled run, its images, ``n_boot`` times with a fixed ``seed`` (same inputs, same
    interval).
    :func:`classify` names the outcome; chapters 2-5 use it.
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
    low, high = (
        float(q) for q in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    )
    means = np.array([d.mean() for d in diffs])
    return Verdict(
        difference=float(means.mean()),
        low=low,
        high=high,
        verdict=classify(low, high, margin),
        runs=len(diffs),
        images=min(len(d) for d in diffs),
        wins=int((means > 0).sum()),
        losses=int((means < 0).sum()),
        margin=margin,
        level=level,
    )


def verdict_table(rows: Sequence[tuple[str, str, Verdict]]):
    """One results table for a chapter page: arm against arm, difference, interval,
    verdict (chapters 2-5).

    ``rows`` holds ``(arm A, arm B, verdict)``; returns a pandas DataFrame (the book
    shows it as a table, and ``glue`` pastes it onto the chapter page). The verdict
    column names the arms (:meth:`Verdict.label`), e.g. ``"cut better"``; every outcome
    has its own words. :func:`tlutils.plot.plot_verdicts` draws the same rows as a
    forest plot.
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
                "verdict": v.label(a, b),
            }
            for a, b, v in rows
        ]
    )
