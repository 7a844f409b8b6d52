"""The one learning-rate chooser: held-out training images, one tie rule (chapters 2-5).

A learning rate chosen on the images that report the result flatters it, so every rate in
the course is chosen on a split of the *training* images: each rate of a grid trains on
one part and is scored on the other (:func:`choose_lr`). The grid is widened along
:data:`LR_LADDER` while its best rate sits at an edge, so the chosen rate is inside what
was tried. **Ties go to the larger rate**: on equal held-out accuracy the larger rate has
moved further from its start in the same number of steps, and a rate chosen at the grid's
low edge would hint that the budget was too short for the grid. Chapters 2-4, the
reference runs (``scripts/reference_run.py``) and ``tlutils train`` all choose with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["LR_LADDER", "LRChoice", "on_ladder", "choose_lr"]

LR_LADDER: tuple[float, ...] = tuple(
    float(f"{m}e{e}") for e in range(-7, 1) for m in (1, 3)
)
"""Learning rates a grid is drawn from and widened along: 1e-7, 3e-7, 1e-6, ... 3."""


@dataclass(frozen=True)
class LRChoice:
    """The chosen rate, every rate's held-out score, and whether the chosen rate is
    still at an edge of what was tried, the ladder or ``max_widen`` run out (chapters 2-5)."""

    lr: float
    scores: dict[float, float]
    at_edge: bool

    def describe(self) -> str:
        """One line: the chosen rate and every trial, e.g. for a report (chapter 5)."""
        tried = ", ".join(f"{lr:g}: {s:.3f}" for lr, s in sorted(self.scores.items()))
        edge = " (at the edge of the grid)" if self.at_edge else ""
        return f"lr {self.lr:g}{edge}; held-out accuracy {tried}"


def on_ladder(lr: float, ladder: Sequence[float] = LR_LADDER) -> float:
    """The ladder's value for ``lr`` (3e-4 written as 0.0003 or 3e-4 alike), or an
    error that names the ladder (chapters 2-5)."""
    for value in ladder:
        if math.isclose(lr, value):
            return float(value)
    raise ValueError(
        f"Learning rate {lr:g} is not on the ladder {', '.join(f'{x:g}' for x in ladder)}."
    )


def choose_lr(
    score: Callable[[float], float | None],
    grid: Sequence[float],
    max_widen: int = 3,
    ladder: Sequence[float] = LR_LADDER,
) -> LRChoice | None:
    """The rate of ``grid`` whose held-out score is highest, ties to the larger rate
    (chapters 2-5).

    ``score(lr)`` trains with rate ``lr`` on one part of the training images and returns
    its accuracy on the other part (``None`` when it cannot run now, e.g. a dry run of
    the reference: then ``None`` is returned). While the best rate is at an edge of the
    rates tried, the next rate of ``ladder`` beyond that edge is tried too, at most
    ``max_widen`` times.
    """
    if not grid:
        raise ValueError("Give at least one learning rate to try.")
    rates = sorted({on_ladder(lr, ladder) for lr in grid})
    scores: dict[float, float] = {}
    widened = 0
    while True:
        for lr in rates:
            if lr not in scores:
                value = score(lr)
                if value is None:
                    return None
                scores[lr] = float(value)
        best = max(scores, key=lambda lr: (scores[lr], lr))
        at_edge = best in (rates[0], rates[-1])
        step = list(ladder).index(best)
        beyond = step - 1 if best == rates[0] else step + 1
        if not at_edge or widened >= max_widen or not 0 <= beyond < len(ladder):
            return LRChoice(best, scores, at_edge)
        rates = sorted([*rates, float(ladder[beyond])])
        widened += 1
