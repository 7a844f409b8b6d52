"""The four cases of transfer learning: dataset size x similarity to ImageNet (chapter 3).

The rule of thumb sorts a new task by two questions: *is the dataset small or large?* and
*is it similar to ImageNet or different?* Each of the four answers suggests a strategy:

==========  ===================================  =====================================
            similar                              different
==========  ===================================  =====================================
small       1: frozen body, new head              2: cut the body early, new head
large       3: fine-tune everything               4: fine-tune everything, or scratch
==========  ===================================  =====================================

This module turns the rule into code (:func:`recommend_case`) and creates the model of
every strategy (:func:`create_strategy_model`). Stages are numbered as everywhere in the
course (:mod:`tlutils.stages`); :func:`tlutils.features.stage_features` extracts the pooled
features of every stage in one cached pass, so frozen strategies cost one forward pass.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .data import create_transform, load_dataset, subsample_per_class
from .features import stage_features
from .models import create_model, freeze
from .stages import body_to_stage, stage_channels

__all__ = [
    "Strategy",
    "STRATEGIES",
    "SMALL_MAX_PER_CLASS",
    "Recommendation",
    "recommend_case",
    "create_strategy_model",
    "plot_decision_guide",
    "IMAGE_SIZE",
    "N_SMALL",
    "N_LARGE",
    "N_VAL",
    "SMALL_DRAWS",
    "CellData",
    "load_cell_data",
    "cell_stage_features",
]

Strategy = Literal["linear_probe", "cut_probe", "fine_tune", "scratch"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
"""The four strategies compared in chapter 3."""

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


_ADVICE = {
    1: (
        "linear_probe",
        "Freeze the pretrained body, replace the last layer, train only the new head.",
    ),
    2: (
        "cut_probe",
        "Keep only the first, more generic stages of the body (cut it early), add pooling and a new head, "
        "train the head. Compare a few cut points on validation data.",
    ),
    3: (
        "fine_tune",
        "New head, body initialised from the pretrained weights, fine-tune the whole network.",
    ),
    4: (
        "fine_tune",
        "Fine-tune the whole network from the pretrained weights, and compare with training from scratch "
        "if you have the data and compute.",
    ),
}


def recommend_case(
    images_per_class: int, similar: bool, small_max_per_class: int = SMALL_MAX_PER_CLASS
) -> Recommendation:
    """The case (1-4) and strategy the rule of thumb suggests (chapter 3).

    ``images_per_class`` is the number of labelled training images per class (the
    smallest class counts); ``similar`` says whether the images *and labels* are like
    ImageNet's (photos of everyday objects, animals, plants), not whether pixel statistics
    match. A dataset with fewer than ``small_max_per_class`` images per class is "small".
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
    )


class CutModel(nn.Module):
    """The body of Lite0 up to a cut stage, global average pooling and a new linear head (chapter 3)."""

    def __init__(self, body: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.body(x)).flatten(1))


def create_strategy_model(
    strategy: Strategy,
    num_classes: int,
    cut_stage: int = 4,
    model: nn.Module | None = None,
) -> nn.Module:
    """The model of a chapter-3 strategy, with a new head for ``num_classes`` classes (chapter 3).

    * ``"linear_probe"``: pretrained Lite0, body frozen, new last layer (only it trains);
    * ``"cut_probe"``: pretrained Lite0 cut after stage ``cut_stage`` (0 = stem ... 8 = head
      conv, see :mod:`tlutils.stages`), frozen, + global average pooling + new linear head;
    * ``"fine_tune"``: pretrained Lite0, new head, every parameter trains;
    * ``"scratch"``: the same architecture with random weights, every parameter trains.

    ``model`` is a pretrained Lite0 to start from (it is copied, not changed; by default a
    fresh one is created).
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {strategy!r}. Choose one of {', '.join(STRATEGIES)}."
        )
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or num_classes < 2
    ):
        raise ValueError(
            f"num_classes must be an integer of at least 2, got {num_classes!r}."
        )
    if strategy == "scratch":
        return create_model(pretrained=False, num_classes=num_classes)
    model = copy.deepcopy(model) if model is not None else create_model(pretrained=True)
    channels = stage_channels(model)  # a clear error unless it is EfficientNet-Lite0
    if strategy == "cut_probe":
        body = body_to_stage(model, cut_stage)
        freeze(body)
        return CutModel(body, channels[cut_stage], num_classes)
    model.reset_classifier(num_classes)
    if strategy == "linear_probe":
        freeze(model)
        for p in model.get_classifier().parameters():
            p.requires_grad_(True)
    return model


def plot_decision_guide(highlight: dict[int, str] | None = None):
    """The 2x2 decision guide: dataset size on one axis, similarity to ImageNet on the other (chapter 3).

    ``highlight`` maps a case number to a short text (e.g. a measured result) written
    under that case's recipe.
    """
    import matplotlib.pyplot as plt

    highlight = highlight or {}
    titles = {
        1: "Case 1: small, similar",
        2: "Case 2: small, different",
        3: "Case 3: large, similar",
        4: "Case 4: large, different",
    }
    recipes = {
        1: "freeze the body\nreplace the last layer\ntrain the new head",
        2: "cut the body early\n(more generic features)\n+ pooling + new head",
        3: "new head, pretrained body\nfine-tune everything\n(small learning rate)",
        4: "fine-tune everything\nor train from scratch:\ncompare both",
    }
    colors = {1: "#cfe8cf", 2: "#fde2c4", 3: "#cde0f5", 4: "#e6d5f0"}
    # x: similarity (similar left, different right); y: size (large top, small bottom)
    position = {1: (0, 0), 2: (1, 0), 3: (0, 1), 4: (1, 1)}
    fig, ax = plt.subplots(figsize=(7.5, 6))
    for case, (x, y) in position.items():
        ax.add_patch(
            plt.Rectangle(
                (x, y), 1, 1, facecolor=colors[case], edgecolor="white", linewidth=4
            )
        )
        ax.text(
            x + 0.5,
            y + 0.82,
            titles[case],
            ha="center",
            va="center",
            fontsize=12,
            weight="bold",
        )
        ax.text(
            x + 0.5, y + 0.5, recipes[case], ha="center", va="center", fontsize=10.5
        )
        if case in highlight:
            ax.text(
                x + 0.5,
                y + 0.14,
                highlight[case],
                ha="center",
                va="center",
                fontsize=9,
                style="italic",
            )
    ax.set(xlim=(0, 2), ylim=(0, 2))
    ax.set_xticks(
        [0.5, 1.5],
        [
            "similar to ImageNet\n(e.g. flower photos)",
            "different\n(e.g. satellite tiles)",
        ],
    )
    ax.set_yticks([0.5, 1.5], [f"small\n(< {SMALL_MAX_PER_CLASS}/class)", "large"])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlabel("similarity of images and labels to ImageNet")
    ax.set_ylabel("labelled images per class")
    fig.tight_layout()
    return fig


# The two datasets of chapter 3's experiments, sized for a 2-core CPU. Both chapter-3
# notebooks use these, so the features one of them caches are the other's too.
IMAGE_SIZE: dict[str, int] = {"flowers": 128, "eurosat": 64}
"""Input size per dataset in chapter 3 (EuroSAT tiles are 64 px; flowers downscaled)."""
N_SMALL = 10
"""Images per class of a small training set (chapter 3)."""
N_LARGE = 200
"""Images per class of the large training set on a CPU (chapter 3; all with ``full``)."""
N_VAL = 50
"""Validation images per class on a CPU (chapter 3; the whole split with ``full``)."""
SMALL_DRAWS: tuple[int, ...] = (0, 1, 2, 3, 4)
"""Seeds of the random draws of the small training set (chapter 3)."""


@dataclass(frozen=True)
class CellData:
    """One dataset of chapter 3 at one input size, large and small (chapter 3).

    ``small`` maps a draw's seed to rows of ``large``: the small training sets are subsets
    of the large one, so their features are rows of the same table. ``large_augmented``
    holds the same images as ``large`` with the course's training augmentation.
    """

    name: str
    classes: list[str]
    image_size: int
    large: Subset
    val: Dataset
    small: dict[int, list[int]]
    large_augmented: Subset


def load_cell_data(
    name: str, config: dict[str, Any], full: bool = False, image_size: int | None = None
) -> CellData:
    """Chapter 3's subsets of dataset ``name``: large, small draws, validation (chapter 3).

    ``config`` is the model's preprocessing (:func:`tlutils.data_config`). On a CPU
    (``full=False``) the large set has :data:`N_LARGE` images per class and validation
    :data:`N_VAL` per class; with ``full=True`` both are the whole splits.
    """
    size = image_size or IMAGE_SIZE[name]
    eval_tf = create_transform(config, image_size=size)
    plain = load_dataset(name, eval_tf, eval_tf)
    train_tf = create_transform(config, train=True, image_size=size)
    augmented = load_dataset(name, train_tf)  # the same split, augmented
    if full:
        large, val = Subset(plain.train, range(len(plain.train))), plain.val
    else:
        large = subsample_per_class(plain.train, N_LARGE, seed=0)
        val = subsample_per_class(plain.val, N_VAL, seed=0)
    small = {
        seed: subsample_per_class(large, N_SMALL, seed=seed).indices
        for seed in SMALL_DRAWS
    }
    return CellData(
        name,
        plain.classes,
        size,
        large,
        val,
        small,
        Subset(augmented.train, large.indices),
    )


def cell_stage_features(
    model: nn.Module, cell: CellData, device: torch.device | str | None = None
) -> dict[str, Any]:
    """Pooled features of every stage for ``cell``'s large and validation sets (chapter 3).

    One cached pass of the frozen body per image (:func:`tlutils.stage_features`). Returns
    ``train`` and ``val`` (lists of per-stage tensors) and ``train_y``, ``val_y`` (arrays).
    """
    train, train_y = stage_features(model, cell.large, device=device, progress=False)
    val, val_y = stage_features(model, cell.val, device=device, progress=False)
    return {
        "train": train,
        "train_y": np.asarray(train_y),
        "val": val,
        "val_y": np.asarray(val_y),
    }
