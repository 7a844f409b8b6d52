"""The FULL smoke test's cap: every ``FULL = True`` branch runs, on a few images (tests).

The notebooks' ``FULL = True`` branches are the full-size experiments for a GPU (224 px,
whole training splits, whole-body fine-tuning, long curves). So that they cannot rot, the
test ``tests/test_full_smoke.py`` runs every notebook with ``FULL = True`` and the
environment variable ``TLUTILS_SMOKE_CAP`` set to a small number ``N``. Only that test
sets it; a reader never does. tlutils then caps the work at a few choke points:

* every image folder (:func:`tlutils.data.load_dataset`, :func:`tlutils.load_image_folder`,
  and so ``diagnose`` and ``train_folder``) keeps its first ``N`` files per class
  (sorted by path, so the cap is the same in every run and for every transform), and
  :func:`tlutils.scan_folder` reads only those;
* :func:`tlutils.subsample_per_class` takes at most what every class has, instead of
  raising: a notebook's "30 per class" becomes what the capped split holds;
* :func:`tlutils.fit` (the one training loop) runs at most :data:`EPOCHS` epochs of
  :data:`BATCHES` batch of :data:`BATCH_IMAGES` images, and scores its per-epoch
  validation on as few: every line of the loop runs, once. :func:`tlutils.predict` and
  :func:`tlutils.evaluate` called by a notebook still score every image it gives them;
* :func:`first` keeps the first seed of a list that a notebook's settings cell reads
  through it (every seed runs the same code, and each costs training runs).

The numbers a capped run prints mean nothing: the test checks that the code runs, not
what it measures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

__all__ = [
    "SMOKE_ENV",
    "BATCHES",
    "BATCH_IMAGES",
    "EPOCHS",
    "cap",
    "limit_per_class",
    "epochs",
    "batches",
]

SMOKE_ENV = "TLUTILS_SMOKE_CAP"
"""The environment variable of the smoke test: images per class (unset: no cap)."""

BATCHES = 1
"""Batches per epoch that :func:`tlutils.fit` trains on under the cap."""

BATCH_IMAGES = 2
"""Items of each such batch under the cap: a training step at 224 px costs seconds on a
CPU, and a step on two images runs the same code (BatchNorm needs two)."""

EPOCHS = 2
"""Epochs that :func:`tlutils.fit` runs at most under the cap: two, so that a schedule's
learning-rate warm-up (the recipe's first tenth of the steps, at least one step) ends before
the schedule's last step even on a folder of one batch."""

T = TypeVar("T")


def cap() -> int | None:
    """The images per class of the smoke test (``TLUTILS_SMOKE_CAP``), or None (tests) (all chapters)."""
    value = os.environ.get(SMOKE_ENV, "").strip()
    if not value:
        return None
    n = int(value)
    if n < 1:
        raise ValueError(f"{SMOKE_ENV} must be a whole number >= 1, got {value!r}.")
    return n


def limit_per_class(targets: Sequence[int]) -> list[int] | None:
    """Under the cap: the positions of the first ``N`` items of every class, in order;
    without it, None (nothing to drop) (tests) (all chapters)."""
    n = cap()
    if n is None:
        return None
    seen: dict[int, int] = {}
    keep = []
    for i, target in enumerate(targets):
        if seen.get(int(target), 0) < n:
            seen[int(target)] = seen.get(int(target), 0) + 1
            keep.append(i)
    return keep


def epochs(n: int) -> int:
    """``n`` epochs; under the cap at most :data:`EPOCHS` (tests) (all chapters)."""
    return n if cap() is None else min(n, EPOCHS)


def batches(loader: Iterable[T]) -> Iterator[T]:
    """The ``(inputs, targets)`` batches of ``loader``; under the cap only the first
    :data:`BATCHES`, each cut to its first :data:`BATCH_IMAGES` items (tests) (all chapters)."""
    if cap() is None:
        return iter(loader)
    return ((x[:BATCH_IMAGES], y[:BATCH_IMAGES]) for x, y in islice(loader, BATCHES))
