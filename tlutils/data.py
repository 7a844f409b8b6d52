"""Folders of images, splits, subsamples, transforms and loaders (chapters 1-5).

Where the course's datasets come from (the offline mirror or the official downloads, and
their checks) is :mod:`tlutils.datasets`; this module turns folders of images into
datasets: :func:`load_dataset` (a course dataset, split), :func:`load_image_folder` (your
own folder, flat or split), :func:`image_files` (the one walk over a folder),
:func:`create_transform` and :func:`create_loader`.
"""

from __future__ import annotations

import copy
import os
import platform
import random
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from . import smoke
from .datasets import (  # noqa: F401  (re-exported: the names readers know from here)
    CACHE_ENV,
    DATASETS,
    IMAGE_EXTENSIONS,
    MIRROR_ENV,
    DownloadError,
    cache_dir,
    dataset_dir,
    is_image_file,
    prepare_shorter_side,
    unreadable_images,
    verify_dataset,
    verify_mirror,
)

__all__ = [
    "MIRROR_ENV",
    "CACHE_ENV",
    "DATASETS",
    "cache_dir",
    "dataset_dir",
    "verify_mirror",
    "verify_dataset",
    "DownloadError",
    "prepare_shorter_side",
    "load_rgb",
    "ImageFolder",
    "load_dataset",
    "load_image_folder",
    "is_split_folder",
    "image_files",
    "unreadable_images",
    "stratified_split",
    "subsample_per_class",
    "create_transform",
    "create_loader",
    "default_num_workers",
    "targets_of",
    "classes_of",
]


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as RGB (grayscale, palette, RGBA and GIF images are converted); name the file if it is unreadable (chapter 1).

    The EXIF orientation of a photo is applied (a phone's portrait shot stands upright), and
    16-bit images are scaled to 8 bits rather than clipped to white.
    """
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
                wide = np.asarray(img, dtype=np.int64) >> 8  # 16 bits to 8
                img = Image.fromarray(wide.clip(0, 255).astype(np.uint8), "L")
            if img.mode == "RGBA" or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img)
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise RuntimeError(
            f"Cannot read image file {path}: {err}. Delete or replace this file."
        ) from err


class ImageFolder(datasets.ImageFolder):
    """torchvision's ``ImageFolder`` with RGB conversion and clear errors for unreadable files (chapter 1)."""

    def __init__(self, root: str | Path, transform: Any = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"Image folder {root} does not exist.")
        super().__init__(
            str(root), transform=transform, loader=load_rgb, is_valid_file=is_image_file
        )


def targets_of(dataset: Dataset) -> list[int]:
    """The label of every item of an ImageFolder or a (nested) Subset, without decoding images (chapter 3)."""
    if isinstance(dataset, Subset):
        parent = targets_of(dataset.dataset)
        return [parent[i] for i in dataset.indices]
    if hasattr(dataset, "targets"):
        return list(dataset.targets)
    raise TypeError(
        f"Cannot read labels of {type(dataset).__name__} without loading it."
    )


def classes_of(dataset: Dataset) -> list[str]:
    """The class names of an ImageFolder or a (nested) Subset (chapter 3)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return list(dataset.classes)


def stratified_split(
    targets: Sequence[int], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Seeded split of indices into train and validation, with the same class proportions in both (chapter 3)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_class.setdefault(int(target), []).append(index)
    train, val = [], []
    for indices in by_class.values():
        rng.shuffle(indices)
        n_val = max(1, round(len(indices) * val_fraction))
        val.extend(indices[:n_val])
        train.extend(indices[n_val:])
    return sorted(train), sorted(val)


def subsample_per_class(dataset: Dataset, k: int, seed: int = 0) -> Subset:
    """A seeded subset with ``k`` images of every class: the course's "small dataset" (chapter 3)."""
    targets = targets_of(dataset)
    counts = Counter(targets)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    short = {c: n for c, n in counts.items() if n < k}
    if short and smoke.cap() is not None:  # the smoke test: what every class has
        k, short = min(counts.values()), {}
    if short:
        raise ValueError(
            f"Cannot take {k} images per class: some classes have fewer ({short})."
        )
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in sorted(counts):
        indices = [i for i, t in enumerate(targets) if t == label]
        chosen.extend(rng.sample(indices, k))
    return Subset(dataset, sorted(chosen))


def create_transform(
    config: dict[str, Any] | None = None,
    train: bool = False,
    image_size: int | None = None,
    flip: bool = True,
) -> transforms.Compose:
    """Preprocessing that matches a pretrained model; with ``train=True``, light augmentation (chapter 1).

    ``config`` is :func:`tlutils.models.data_config` of the model (default: the
    EfficientNet-Lite0 values mean = std = 0.5, bicubic, crop 0.875). ``image_size`` overrides
    the model's 224 px, e.g. 160 px to train faster on a CPU. The augmentation is a random
    resized crop (scale 0.5-1) and, unless ``flip=False`` (images whose class a mirror
    image changes, such as digits), a random horizontal flip.
    """
    config = config or {
        "input_size": (3, 224, 224),
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
        "interpolation": "bicubic",
        "crop_pct": 0.875,
    }
    size = image_size or config["input_size"][-1]
    mode = transforms.InterpolationMode(config.get("interpolation", "bilinear"))
    normalize = [
        transforms.ToTensor(),
        transforms.Normalize(config["mean"], config["std"]),
    ]
    if train:
        return transforms.Compose(
            [
                transforms.RandomResizedCrop(
                    size, scale=(0.5, 1.0), interpolation=mode
                ),
                *([transforms.RandomHorizontalFlip()] if flip else []),
                *normalize,
            ]
        )
    resize = int(size / config.get("crop_pct", 0.875))
    return transforms.Compose(
        [
            transforms.Resize(resize, interpolation=mode),
            transforms.CenterCrop(size),
            *normalize,
        ]
    )


@dataclass
class DatasetSplits:
    """A dataset's train and validation parts and its class names."""

    train: Dataset
    val: Dataset
    classes: list[str]


def image_files(folder: str | Path) -> list[Path]:
    """Every image file under ``folder``, nested sub-folders included, sorted by path: the
    one walk over a folder that ``diagnose``, training and ``evaluate`` share (chapter 5).
    Other files are left out (:func:`is_image_file`)."""
    return sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and is_image_file(p.name)
    )


def _class_folder(
    root: Path, check_images: bool | Sequence[str | Path]
) -> datasets.ImageFolder:
    """``root/<class>/<image>`` as an ImageFolder; clear errors, unreadable files skipped."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"Image folder {root} does not exist. Check the path; it should hold one "
            "sub-folder per class (or train/ and val/ folders that do)."
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise ValueError(
            f"{root} has {len(classes)} class folder(s) ({classes}); a classifier needs at "
            "least 2. Put the images of each class in their own sub-folder."
        )
    files = {c: image_files(root / c) for c in classes}  # nested folders too
    empty = [c for c in classes if not files[c]]
    if empty:
        raise ValueError(
            f"Class folder(s) {', '.join(str(root / c) for c in empty)} hold no images. "
            "Add images to them or remove them."
        )
    if isinstance(check_images, bool):
        paths = [p for c in classes for p in files[c]]
        bad = set(unreadable_images(paths)) if check_images else set()
    else:  # the unreadable files a scan of the folder found: not decoded again
        bad = {Path(p) for p in check_images}
    if bad:
        names = ", ".join(str(p) for p in sorted(bad))
        warnings.warn(
            f"Skipping {len(bad)} unreadable image(s): {names}. Delete or replace them.",
            stacklevel=3,
        )
    folder = datasets.ImageFolder(
        str(root),
        loader=load_rgb,
        is_valid_file=lambda p: is_image_file(p) and Path(p) not in bad,
        allow_empty=False,
    )
    keep = smoke.limit_per_class(folder.targets)  # only under the smoke test's cap
    if keep is not None:
        folder.samples = folder.imgs = [folder.samples[i] for i in keep]
        folder.targets = [target for _, target in folder.samples]
    return folder


def is_split_folder(root: str | Path) -> bool:
    """Whether ``root`` is already split into ``train/`` and ``val/`` folders (chapter 5)."""
    root = Path(root).expanduser()
    return (root / "train").is_dir() and (root / "val").is_dir()


def load_image_folder(
    root: str | Path,
    train_transform: Any = None,
    val_transform: Any = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    check_images: bool | Sequence[str | Path] = True,
) -> DatasetSplits:
    """Your own image folder as train and validation datasets, flat or pre-split (chapter 5).

    ``root/<class>/<image>`` is split with a seeded, stratified ``val_fraction`` of every
    class; if ``root`` has ``train/`` and ``val/`` folders (each ``<class>/<image>``) they
    are used as they are, and must hold the same classes. A missing folder, fewer than two
    classes or an empty class folder raise an error that names it; files that do not
    decode (``check_images=True``: every file is decoded once to find them; or the list
    of unreadable files that :func:`tlutils.scan_folder` found) are listed in a warning
    and skipped.
    """
    root = Path(root).expanduser()
    if is_split_folder(root):
        train = _class_folder(root / "train", check_images)
        val = _class_folder(root / "val", check_images)
        if train.classes != val.classes:
            raise ValueError(
                f"{root / 'train'} and {root / 'val'} have different class folders: "
                f"{train.classes} vs {val.classes}. Give both the same class folders."
            )
        train.transform, val.transform = train_transform, val_transform
        return DatasetSplits(train, val, list(train.classes))
    full = _class_folder(root, check_images)
    val_full = copy.copy(full)
    full.transform, val_full.transform = train_transform, val_transform
    train_idx, val_idx = stratified_split(full.targets, val_fraction, seed)
    return DatasetSplits(
        Subset(full, train_idx), Subset(val_full, val_idx), list(full.classes)
    )


def load_dataset(
    name: str,
    train_transform: Any = None,
    val_transform: Any = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> DatasetSplits:
    """Load a course dataset as train and validation datasets (chapters 1-4).

    ``hymenoptera`` has official train/val folders. ``flowers`` and ``eurosat`` have no
    official split, so a seeded stratified split with ``val_fraction`` of every class
    goes to validation (the same seed always gives the same split).
    """
    return load_image_folder(
        dataset_dir(name), train_transform, val_transform, val_fraction, seed, False
    )


def default_num_workers() -> int:
    """DataLoader workers that are safe in notebooks: 0 on Windows and macOS (spawned workers (chapter 1)
    cannot import functions defined in a notebook), up to 4 on Linux."""
    if platform.system() in ("Windows", "Darwin"):
        return 0
    return min(
        4,
        len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count() or 1,
    )


def create_loader(
    dataset: Dataset,
    batch_size: int = 32,
    shuffle: bool = False,
    num_workers: int | None = None,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader with notebook-safe workers and a seeded shuffle (chapter 1)."""
    workers = default_num_workers() if num_workers is None else num_workers
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        worker_init_fn=_seed_worker,
    )


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
