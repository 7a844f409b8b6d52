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
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from .cache import atomic_write_text, digest
from .data import (
    create_transform,
    load_dataset,
    stratified_split,
    subsample_per_class,
)
from .datasets import cache_dir
from .features import extract_features, stage_features
from .models import create_model, freeze, replace_head
from .recipe import REFERENCE, Recipe
from .reference import from_bits, to_bits
from .rule import (
    SMALL_MAX_PER_CLASS,
    STRATEGIES,
    Recommendation,
    Strategy,
    recommend_case,
)
from .stages import (
    NUM_STAGES,
    CutModel,
    StageFeatures,
    split_at_stage,
    stage_channels,
    stage_outputs,
)
from .train import model_device

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
    "UPSAMPLED_SIZE",
    "N_RESIZED",
    "MAP_STAGES",
    "top_stages",
    "QUICK",
    "train_top",
    "resized_cell",
    "selection_split",
    "val_subset",
    "top_correct",
    "top_accuracy",
    "fine_tune_score",
]


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
    if model is None:
        model = create_model(pretrained=True)
    if strategy == "cut_probe":  # CutModel copies the body it keeps
        cut = CutModel(model, cut_stage, num_classes)
        freeze(cut.body)
        return cut
    model = copy.deepcopy(model)
    stage_channels(model)  # a clear error unless it is EfficientNet-Lite0
    model.reset_classifier(num_classes)
    if strategy == "linear_probe":
        freeze(model)
        for p in model.get_classifier().parameters():
            p.requires_grad_(True)
    return model


def plot_decision_guide(highlight: dict[int, str] | None = None):
    """The 2x2 decision guide: dataset size on one axis, similarity to ImageNet on the other (chapter 3).

    ``highlight`` maps a case number to a short text (e.g. a measured result) written
    under that case's recipe, wrapped so that it stays inside its quadrant (a newline
    starts a new paragraph).
    """
    import textwrap

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
        2: "cut the body earlier\n(choose the stage on\ntraining data) + new head",
        3: "probe first, then\nfine-tune with the recipe\n(warm-up, small rates)",
        4: "fine-tune with the recipe\nor cut in the middle;\nscratch needs far more",
    }
    colors = {1: "#cfe8cf", 2: "#fde2c4", 3: "#cde0f5", 4: "#e6d5f0"}
    # x: similarity (similar left, different right); y: size (large top, small bottom)
    position = {1: (0, 0), 2: (1, 0), 3: (0, 1), 4: (1, 1)}
    fig, ax = plt.subplots(figsize=(8, 6.5))
    for case, (x, y) in position.items():
        ax.add_patch(
            plt.Rectangle(
                (x, y), 1, 1, facecolor=colors[case], edgecolor="white", linewidth=4
            )
        )
        ax.text(
            x + 0.5,
            y + 0.9,
            titles[case],
            ha="center",
            va="center",
            fontsize=12,
            weight="bold",
        )
        ax.text(x + 0.5, y + 0.64, recipes[case], ha="center", va="center", fontsize=10)
        if case in highlight:
            ax.text(
                x + 0.5,
                y + 0.23,
                "\n".join(textwrap.fill(t, 34) for t in highlight[case].splitlines()),
                ha="center",
                va="center",
                fontsize=8.5,
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
N_LARGE = 300
"""Images per class of the large training set on a CPU (chapter 3; all with ``full``).

Three times the course's line between small and large (:data:`SMALL_MAX_PER_CLASS`)."""
N_VAL = 50
"""Validation images per class where a trained arm is scored again and again (chapter 3's
network from scratch, :func:`val_subset`); every other arm scores the whole validation
split."""
SMALL_DRAWS: tuple[int, ...] = (0, 1, 2, 3, 4)
"""Seeds of the random draws of the small training set (chapter 3)."""
UPSAMPLED_SIZE = 128
"""The second input size of EuroSAT (native 64 px, upsampled to this) in chapter 3."""
N_RESIZED = 100
"""Images per class of the EuroSAT subset measured at both input sizes (chapter 3)."""
MAP_STAGES: tuple[int, ...] = (5, 6)
"""Stages whose feature maps :func:`cell_stage_features` caches: the frozen bottoms
below the stages that chapter 3 fine-tunes."""


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
    name: str,
    config: dict[str, Any],
    full: bool = False,
    image_size: int | None = None,
    n_large: int | None = None,
) -> CellData:
    """Chapter 3's subsets of dataset ``name``: large, small draws, validation (chapter 3).

    ``config`` is the model's preprocessing (:func:`tlutils.data_config`). On a CPU
    (``full=False``) the large set has :data:`N_LARGE` images per class (``n_large``
    if given); with ``full=True`` it is the whole training split. Validation is always
    the whole validation split: the probes and the recipe score it from cached features
    at almost no cost (:func:`val_subset` picks fewer for arms that cost more).
    """
    size = image_size or IMAGE_SIZE[name]
    eval_tf = create_transform(config, image_size=size)
    plain = load_dataset(name, eval_tf, eval_tf)
    train_tf = create_transform(config, train=True, image_size=size)
    augmented = load_dataset(name, train_tf)  # the same split, augmented
    if full:
        large = Subset(plain.train, range(len(plain.train)))
    else:
        large = subsample_per_class(plain.train, n_large or N_LARGE, seed=0)
    val = Subset(plain.val, range(len(plain.val)))
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


def val_subset(cell: CellData, per_class: int | None = None) -> np.ndarray:
    """Rows of ``cell.val``: a seeded subset of ``per_class`` (:data:`N_VAL`) images per
    class (chapter 3), for an arm too costly to score on every validation image (the
    network from scratch is scored at every budget). Compare other arms with it on the
    same rows: ``correct[rows]``."""
    return np.asarray(
        subsample_per_class(cell.val, per_class or N_VAL, seed=0).indices, dtype=int
    )


def resized_cell(
    cell: CellData,
    config: dict[str, Any],
    image_size: int,
    per_class: int,
    val_rows: Sequence[int] | None = None,
) -> tuple[CellData, list[int]]:
    """A subset of ``cell``'s images at another input size, for a fair size test (chapter 3).

    Takes ``per_class`` images per class of ``cell.large`` (seeded) and the same validation
    images (``val_rows`` of ``cell.val``, or all of them), resized to ``image_size``.
    Returns the new cell and ``rows``: the positions of its training images in
    ``cell.large``, so the features of the same images at the original size are
    ``features[rows]`` (and ``val_features[val_rows]``). The small draws are drawn afresh
    from the subset.
    """
    rows = subsample_per_class(cell.large, per_class, seed=0).indices
    eval_tf = create_transform(config, image_size=image_size)
    plain = load_dataset(cell.name, eval_tf, eval_tf)
    train_tf = create_transform(config, train=True, image_size=image_size)
    augmented = load_dataset(cell.name, train_tf)
    indices = [cell.large.indices[r] for r in rows]
    large = Subset(plain.train, indices)
    val_indices = list(getattr(cell.val, "indices", range(len(cell.val))))
    if val_rows is not None:
        val_indices = [val_indices[r] for r in val_rows]
    val = Subset(plain.val, val_indices)
    small = {
        seed: subsample_per_class(large, N_SMALL, seed=seed).indices
        for seed in cell.small
    }
    resized = CellData(
        cell.name,
        cell.classes,
        image_size,
        large,
        val,
        small,
        Subset(augmented.train, indices),
    )
    return resized, list(rows)


def selection_split(
    cell: CellData, labels: np.ndarray, size: str
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``cell.large`` to fit and to score a setting on, never validation (chapter 3).

    A setting (a cut stage, a learning rate) chosen on the validation set that reports
    the result would flatter it, so chapter 3 chooses on training images. ``size`` is
    ``"large"``: two thirds of the large set to fit, one third to score. ``"small"``: a
    separate seeded draw of :data:`N_SMALL` images per class to fit and 30 others to
    score (ten images per class are too few to tell settings apart).
    """
    labels = np.asarray(labels)
    if size == "large":
        fit, held = stratified_split(labels.tolist(), val_fraction=1 / 3, seed=0)
        return np.asarray(fit), np.asarray(held)
    if size != "small":
        raise ValueError(f"size must be 'small' or 'large', got {size!r}.")
    pool = np.asarray(subsample_per_class(cell.large, N_SMALL + 30, seed=100).indices)
    fit, held = stratified_split(
        labels[pool].tolist(), val_fraction=30 / (N_SMALL + 30), seed=0
    )
    return pool[fit], pool[held]


class _StagesAndMaps(StageFeatures):
    """Pooled features of every stage and the flattened maps of ``map_stages``, one pass."""

    def __init__(self, model: nn.Module, map_stages: tuple[int, ...]) -> None:
        super().__init__(model)  # every stage, pooled
        self.register_buffer("map_stages", torch.tensor(sorted(map_stages)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = stage_outputs(self.model, x, list(range(NUM_STAGES)))
        pooled = [m.mean((2, 3)) for m in maps]
        kept = [maps[s].flatten(1) for s in self.map_stages.tolist()]
        return torch.cat(pooled + kept, dim=1)


def cell_stage_features(
    model: nn.Module,
    cell: CellData,
    device: torch.device | str | None = None,
    map_stages: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Pooled features of every stage for ``cell``'s large and validation sets (chapter 3).

    One cached pass of the frozen body per image (:func:`tlutils.stage_features`). Returns
    ``train`` and ``val`` (lists of per-stage tensors) and ``train_y``, ``val_y`` (arrays).
    With ``map_stages`` (e.g. :data:`MAP_STAGES`) the same pass also keeps the feature
    maps of those stages, the cached output of a frozen bottom
    (:func:`tlutils.stages.split_at_stage`): ``train_maps`` and ``val_maps`` map a stage
    to a tensor ``(images, channels, height, width)``.
    """
    if not map_stages:
        train, train_y = stage_features(
            model, cell.large, device=device, progress=False
        )
        val, val_y = stage_features(model, cell.val, device=device, progress=False)
        return {
            "train": train,
            "train_y": np.asarray(train_y),
            "val": val,
            "val_y": np.asarray(val_y),
        }
    backbone = _StagesAndMaps(model, tuple(map_stages))
    size = cell.image_size
    with torch.no_grad():
        shapes = [
            m.shape[1:]
            for m in stage_outputs(
                backbone.model,
                torch.zeros(1, 3, size, size, device=model_device(backbone.model)),
                sorted(map_stages),
            )
        ]
    channels = stage_channels(model)
    out: dict[str, Any] = {}
    for split, dataset in [("train", cell.large), ("val", cell.val)]:
        flat, labels = extract_features(
            backbone, dataset, device=device, progress=False
        )
        sizes = channels + [int(np.prod(s)) for s in shapes]
        parts = torch.split(flat, sizes, dim=1)
        out[split] = dict(enumerate(parts[:NUM_STAGES]))
        out[f"{split}_maps"] = {
            s: part.reshape(-1, *shape)
            for s, part, shape in zip(
                sorted(map_stages), parts[NUM_STAGES:], shapes, strict=True
            )
        }
        out[f"{split}_y"] = np.asarray(labels)
    return out


def top_stages(k: int) -> list[int]:
    """The stage numbers of the top ``k`` stages of Lite0, e.g. ``[7, 8]`` for 2 (chapter 3).

    ``k = 0`` is the linear probe (only the head trains), ``k = NUM_STAGES`` the whole body.
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= NUM_STAGES:
        raise ValueError(f"k must be a whole number from 0 to {NUM_STAGES}, got {k!r}.")
    return list(range(NUM_STAGES - k, NUM_STAGES))


QUICK = REFERENCE.replace(augment="none")
"""The course's recipe as chapter 3's quick run uses it on cached maps: the same recipe
(:data:`tlutils.recipe.REFERENCE`), no augmentation (the cached maps are of the plain
images); the notebook sets the stages, the epochs and the rate."""


def _as_dataset(inputs, labels) -> Dataset:
    """Cached tensors with their labels as a dataset, or a dataset as it is."""
    if isinstance(inputs, Dataset):
        return inputs
    return TensorDataset(inputs, torch.as_tensor(np.asarray(labels)))


def train_top(
    model: nn.Module,
    bottom_stage: int | None,
    inputs: torch.Tensor | Dataset,
    labels: torch.Tensor | np.ndarray | None,
    head: nn.Module,
    recipe: Recipe,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Phase 2 of the recipe: fine-tune the recipe's stages above a frozen bottom (chapter 3).

    ``inputs`` are the cached outputs of the frozen bottom (stages 0 to ``bottom_stage``,
    :func:`tlutils.stages.split_at_stage`) for the training images with their
    ``labels``, or (``bottom_stage=None``) a dataset of the images themselves, e.g. with
    the recipe's augmentation. ``head`` is the warm head (:func:`tlutils.probe.
    probe_head`, phase 1), copied. The course's one recipe runs it
    (:func:`tlutils.recipe.run`: ``recipe.stages`` and the head train, the rest stays
    frozen); with no stages the top is returned untrained (the probe). Seeded.
    """
    from .recipe import run

    stages = list(recipe.stages or [])
    if bottom_stage is None:
        top = copy.deepcopy(model)
    else:
        if any(s <= bottom_stage for s in stages):
            raise ValueError(
                f"Stages {stages} must lie above the cached bottom (stage "
                f"{bottom_stage}); cache a lower stage or pass the images."
            )
        _, top = split_at_stage(model, bottom_stage)
    replace_head(top, head.out_features, head=copy.deepcopy(head))
    if not stages and recipe.stages is not None:
        return freeze(top).eval()
    run(recipe.replace(head="keep"), top, _as_dataset(inputs, labels), seed=int(seed),
        device=device, num_workers=0, progress=False)  # fmt: skip
    return top.eval()


@torch.no_grad()
def top_correct(
    top: nn.Module,
    maps: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Which images a top (:func:`train_top`) gets right on cached bottom outputs, in eval
    mode (chapter 3): a boolean array in the images' order, what the verdict rule
    (:func:`tlutils.verdict.compare`) pairs."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    top = top.to(device).eval()
    predictions = torch.cat(
        [
            top(maps[i : i + 256].to(device)).argmax(1).cpu()
            for i in range(0, len(maps), 256)
        ]
    )
    return (predictions == torch.as_tensor(np.asarray(labels))).numpy()


def top_accuracy(
    top: nn.Module,
    maps: torch.Tensor,
    labels: torch.Tensor | np.ndarray,
    device: torch.device | str | None = None,
) -> float:
    """Accuracy of a top (:func:`train_top`) on cached bottom outputs, eval mode (chapter 3)."""
    return float(top_correct(top, maps, labels, device).mean())


def _read_run(path: Path, n_images: int) -> tuple[np.ndarray, float] | None:
    """A stored run of :func:`fine_tune_score`, or None (and the file removed) if it is
    missing, damaged or not scored on ``n_images`` images."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        bits, seconds = str(stored["correct"]), float(stored["seconds"])
        if len(bits) != n_images or set(bits) - {"0", "1"}:
            raise ValueError("not this run's images")
    except (ValueError, KeyError, TypeError):  # damaged: run again, never trust
        path.unlink(missing_ok=True)
        return None
    return from_bits(bits), seconds


def fine_tune_score(
    model: nn.Module,
    bottom_stage: int | None,
    inputs: torch.Tensor | Dataset,
    labels: torch.Tensor | np.ndarray | None,
    head: nn.Module,
    recipe: Recipe,
    score: tuple[torch.Tensor, torch.Tensor | np.ndarray],
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, float]:
    """:func:`train_top`, then :func:`top_correct` on ``score = (inputs, labels)``
    (chapter 3); returns which of those images it got right (a boolean array: its mean is
    the accuracy) and the seconds the training took.

    Both are kept in the disk cache (``<cache>/results``), under a key made of every
    argument, the weights and the code that trains: the second notebook of chapter 3
    repeats runs of the first (its learning-rate trials, the recipe on EuroSAT) and reads
    them instead of training again. Any change to an input is a new run.
    """
    from .train import get_device

    device = torch.device(device) if device is not None else get_device()
    data = _identity(inputs) if isinstance(inputs, Dataset) else (inputs, labels)
    key = _run_key(model, bottom_stage, data, head, recipe.settings(), score,
                   int(seed), device.type)  # fmt: skip
    path = cache_dir() / "results" / f"{key}.json"
    stored = _read_run(path, len(score[1]))
    if stored is not None:
        return stored
    start = time.perf_counter()
    top = train_top(model, bottom_stage, inputs, labels, head, recipe, seed, device)
    seconds = time.perf_counter() - start
    correct = top_correct(top, *score, device=device)
    record = {"accuracy": float(correct.mean()), "seconds": seconds,
              "correct": to_bits(correct)}  # fmt: skip
    atomic_write_text(path, json.dumps(record))
    return correct, seconds


def _identity(dataset: Dataset) -> list:
    """What a dataset of images is, for a cache key: its files and labels, in order,
    and every step of its transform with its settings."""
    from .features import _describe_transform, _samples

    samples, transform = _samples(dataset)
    return [samples, _describe_transform(transform)]


def _run_key(*parts: Any) -> str:
    """A digest of the training code (:func:`tlutils.recipe.code_digest`), torch's
    version and the run's tensors, weights and settings (:func:`tlutils.cache.digest`)."""
    from .recipe import code_digest

    return digest(torch.__version__, code_digest([train_top, _as_dataset]), *parts)
