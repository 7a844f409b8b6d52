"""The four cases of transfer learning as a rule: dataset size x similarity to ImageNet
(chapter 3), the advice that ``diagnose`` gives (chapter 5).

==========  ===================================  =====================================
            similar                              different
==========  ===================================  =====================================
small       1: frozen body, new head              2: cut the body early, new head
large       3: fine-tune everything               4: fine-tune everything, or scratch
==========  ===================================  =====================================

The course's core: chapter 3's notebooks (:mod:`tlutils.cases`), the exercises
(:mod:`tlutils.checks`) and the product (:mod:`tlutils.diagnosis`) all read the rule here.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "Strategy",
    "STRATEGIES",
    "TRAIN_STRATEGIES",
    "SMALL_MAX_PER_CLASS",
    "Recommendation",
    "recommend_case",
]

Strategy = Literal["linear_probe", "cut_probe", "fine_tune", "scratch"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
"""The four strategies compared in chapter 3."""
TRAIN_STRATEGIES: tuple[str, ...] = tuple(s for s in STRATEGIES if s != "scratch")
"""What ``tlutils train`` (:func:`tlutils.train_folder`) trains on your folder."""

SMALL_MAX_PER_CLASS = 100
"""Below this many images per class the course calls a dataset *small* (a rule of thumb, not a law)."""


@dataclass(frozen=True)
class Recommendation:
    """What the four-case rule suggests for a dataset (chapter 3)."""

    case: int
    size: str  # "small" or "large"
    similarity: str  # "similar" or "different"
    strategy: Strategy
    advice: str
    measured: str = ""  # what chapter 3 measured for this case, where it was passed in


_ADVICE = {
    1: (
        "linear_probe",
        "Freeze the pretrained body, replace the last layer, train only the new head: "
        "the linear probe. With this little data a fine-tune has too few images to "
        "learn from and to be judged on.",
    ),
    2: (
        "cut_probe",
        "Probe the pooled features of every stage and keep the stage that scores best on "
        "your training images (never on validation): for data unlike ImageNet the "
        "middle stages beat the final ones (chapter 3). If your images are small, try a "
        "larger input size too.",
    ),
    3: (
        "fine_tune",
        "Start from the linear probe, then fine-tune the whole body with the course's "
        "recipe (AdamW, a short learning-rate warm-up, a cosine schedule, augmentation, "
        "three epochs) at a learning rate chosen on held-out training images. At chapter "
        "3's reference budget this beat both the linear and the cut probe by the "
        "verdict rule. Keep it only if it is at least as good as the probe on your "
        "validation images.",
    ),
    4: (
        "fine_tune",
        "Start from the probe, then fine-tune the whole body with the course's recipe "
        "at a learning rate chosen on held-out training images, with an input size "
        "near the pretraining one. At chapter 3's reference budget this beat both the "
        "frozen cut in the middle and the linear probe by the verdict rule. Training "
        "from scratch needs far more compute and data.",
    ),
}


def recommend_case(
    images_per_class: int,
    similar: bool,
    small_max_per_class: int = SMALL_MAX_PER_CLASS,
    measured: dict[int, str] | None = None,
) -> Recommendation:
    """The case (1-4) and strategy the rule of thumb suggests (chapter 3).

    ``images_per_class`` is the number of labelled training images per class (the
    smallest class counts); ``similar`` says whether the images *and labels* are like
    ImageNet's (photos of everyday objects, animals, plants), not whether pixel statistics
    match. A dataset with fewer than ``small_max_per_class`` images per class is "small".
    ``measured`` maps a case to what a measurement found (chapter 3's notebook passes its
    verdicts); the recommendation carries it next to the rule's advice, so that where the
    two disagree the reader sees both.
    """
    if isinstance(images_per_class, bool) or not isinstance(
        images_per_class, (numbers.Integral, float)
    ):
        raise TypeError(
            f"images_per_class must be a number, got {type(images_per_class).__name__}."
        )
    if isinstance(images_per_class, float) and not (
        math.isfinite(images_per_class) and images_per_class.is_integer()
    ):
        raise ValueError(
            f"images_per_class must be a whole number of images, got {images_per_class}."
        )
    if images_per_class < 1:
        raise ValueError(
            f"images_per_class must be at least 1 (you need labelled images to transfer to), got {images_per_class}."
        )
    if not isinstance(similar, bool):
        raise TypeError(
            f"similar must be True or False (your judgement: are the images and labels like ImageNet's?), "
            f"got {similar!r}."
        )
    if (
        isinstance(small_max_per_class, bool)
        or not isinstance(small_max_per_class, int)
        or small_max_per_class < 2
    ):
        raise ValueError(
            f"small_max_per_class must be an integer of at least 2, got {small_max_per_class!r}."
        )
    small = images_per_class < small_max_per_class
    case = {(True, True): 1, (True, False): 2, (False, True): 3, (False, False): 4}[
        (small, similar)
    ]
    strategy, advice = _ADVICE[case]
    return Recommendation(
        case=case,
        size="small" if small else "large",
        similarity="similar" if similar else "different",
        strategy=strategy,
        advice=advice,
        measured=(measured or {}).get(case, ""),
    )
