"""Real datasets, offline mirrors, splits, subsamples and transforms (chapters 1-4).

Three datasets are used in the course:

* ``hymenoptera``: the PyTorch tutorial's ants and bees (train/val folders, 398 images);
* ``flowers``: TensorFlow's ``tf_flowers`` photos (5 classes, 3,670 images, no split);
* ``eurosat``: EuroSAT RGB satellite tiles (10 classes, 27,000 images, no split).

Where the data comes from, in this order:

1. If the environment variable ``TLUTILS_DATA_MIRROR`` is set, it names a folder holding
   ``<name>/`` mirrors (as on the course's CI machines). It is read as it is and the
   network is never touched.
2. Otherwise the official archive is downloaded once into the cache folder
   (``TLUTILS_CACHE``, default ``~/.cache/tlutils``), checked and extracted atomically.
"""

from __future__ import annotations

import copy
import hashlib
import os
import platform
import random
import shutil
import tarfile
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms
from torchvision.datasets.utils import check_integrity, download_url

__all__ = [
    "MIRROR_ENV",
    "CACHE_ENV",
    "DATASETS",
    "cache_dir",
    "dataset_dir",
    "verify_mirror",
    "load_rgb",
    "ImageFolder",
    "load_dataset",
    "load_image_folder",
    "is_split_folder",
    "unreadable_images",
    "stratified_split",
    "subsample_per_class",
    "create_transform",
    "create_loader",
    "default_num_workers",
    "targets_of",
    "classes_of",
]

MIRROR_ENV = "TLUTILS_DATA_MIRROR"
"""Environment variable naming an offline mirror folder (CI sets it to ``../shared/data``)."""
CACHE_ENV = "TLUTILS_CACHE"
"""Environment variable naming the cache folder for downloads and features."""


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset comes from and what a complete copy holds."""

    url: str
    archive_root: (
        str  # folder inside the archive that holds the class folders (or splits)
    )
    counts: dict[str, int]  # expected image count per "split/class" or "class"
    md5: str | None = None  # archive checksum where a trusted one is published
    splits: tuple[str, ...] = ()  # official split folders, if any
    note: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "hymenoptera": DatasetInfo(
        url="https://download.pytorch.org/tutorial/hymenoptera_data.zip",
        archive_root="hymenoptera_data",
        counts={"train/ants": 124, "train/bees": 121, "val/ants": 70, "val/bees": 83},
        splits=("train", "val"),
        note="ants vs bees from the PyTorch transfer-learning tutorial",
    ),
    "flowers": DatasetInfo(
        url="http://download.tensorflow.org/example_images/flower_photos.tgz",
        archive_root="flower_photos",
        counts={
            "daisy": 633,
            "dandelion": 898,
            "roses": 641,
            "sunflowers": 699,
            "tulips": 799,
        },
        note="tf_flowers, 5 kinds of flowers, Flickr photos (CC BY 2.0)",
    ),
    "eurosat": DatasetInfo(
        # The address torchvision.datasets.EuroSAT uses (the authors' own server is often down).
        url="https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
        archive_root="2750",
        md5="c8fa014336c82ac7804f0398fcb19387",
        counts={
            "AnnualCrop": 3000,
            "Forest": 3000,
            "HerbaceousVegetation": 3000,
            "Highway": 2500,
            "Industrial": 2500,
            "Pasture": 2000,
            "PermanentCrop": 2500,
            "Residential": 3000,
            "River": 2500,
            "SeaLake": 3000,
        },
        note="EuroSAT RGB Sentinel-2 tiles, 64x64 px, 10 land-use classes (MIT)",
    ),
}

IMAGE_EXTENSIONS = (*datasets.folder.IMG_EXTENSIONS, ".gif")
"""Files read as images: torchvision's list plus GIF (hymenoptera has one GIF among its ants)."""


def cache_dir() -> Path:
    """The folder for downloads and cached features (``$TLUTILS_CACHE`` or ``~/.cache/tlutils``) (chapter 1)."""
    path = Path(
        os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tlutils"
    ).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(sorted(DATASETS))}."
        )
    return DATASETS[name]


def _count_images(root: Path, info: DatasetInfo) -> dict[str, int]:
    found = {}
    for key in info.counts:
        folder = root / key
        found[key] = (
            sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if folder.is_dir()
            else 0
        )
    return found


def _check_complete(root: Path, name: str, info: DatasetInfo, where: str) -> None:
    """Raise if a copy of the dataset lacks class folders or images."""
    found = _count_images(root, info)
    wrong = {
        key: (found[key], want)
        for key, want in info.counts.items()
        if found[key] != want
    }
    if wrong:
        details = "; ".join(
            f"{key}: {have} images, expected {want}"
            for key, (have, want) in wrong.items()
        )
        raise RuntimeError(
            f"The {where} copy of {name!r} at {root} is incomplete or altered ({details})."
        )


def _check_manifest(mirror: Path, name: str, verify_checksums: bool = False) -> None:
    """If the mirror has a ``MANIFEST.sha256``, check that every file it lists for ``name`` is there (and intact)."""
    manifest = mirror / "MANIFEST.sha256"
    if not manifest.is_file():
        return
    missing, altered = [], []
    for line in manifest.read_text().splitlines():
        digest, _, rel = line.strip().partition("  ")
        if not rel.startswith(name + "/"):
            continue
        path = mirror / rel
        if not path.is_file():
            missing.append(rel)
        elif (
            verify_checksums and hashlib.sha256(path.read_bytes()).hexdigest() != digest
        ):
            altered.append(rel)
    if missing or altered:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} missing file(s), e.g. {', '.join(missing[:5])}"
            )
        if altered:
            parts.append(
                f"{len(altered)} file(s) with the wrong checksum, e.g. {', '.join(altered[:5])}"
            )
        raise RuntimeError(
            f"The mirror of {name!r} at {mirror / name} does not match {manifest}: {'; '.join(parts)}. "
            "Copy the mirror again."
        )


def verify_mirror(name: str) -> Path:
    """Check every file of a mirrored dataset against the mirror's ``MANIFEST.sha256`` (slow: reads all bytes) (chapter 1)."""
    _info(name)
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        raise RuntimeError(
            f"${MIRROR_ENV} is not set, so there is no mirror to verify."
        )
    _check_manifest(Path(mirror).expanduser(), name, verify_checksums=True)
    return Path(mirror).expanduser() / name


def dataset_dir(name: str, download: bool = True) -> Path:
    """The folder holding dataset ``name``: the mirror if ``$TLUTILS_DATA_MIRROR`` is set, else the download cache (chapter 1).

    With no mirror, the official archive is downloaded once, verified (checksum where
    known, then the image count of every class) and extracted atomically: an
    interrupted download never leaves a half-written dataset behind.
    """
    info = _info(name)
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        root = Path(mirror).expanduser() / name
        if not root.is_dir():
            raise FileNotFoundError(
                f"${MIRROR_ENV} is set to {mirror!r}, but it has no folder {name!r} ({root} does not exist). "
                f"Point ${MIRROR_ENV} at the folder that contains {name}/, or unset it to download "
                f"{info.url}."
            )
        _check_manifest(Path(mirror).expanduser(), name)
        _check_complete(root, name, info, where="mirror")
        return root
    root = cache_dir() / "datasets" / name
    if root.is_dir():
        return root
    if not download:
        raise FileNotFoundError(
            f"Dataset {name!r} is not in the cache ({root}) and download=False."
        )
    _download(name, info, root)
    return root


def _download(name: str, info: DatasetInfo, root: Path) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{name}-") as tmp:
        tmp_path = Path(tmp)
        filename = info.url.rsplit("/", 1)[-1]
        try:
            download_url(info.url, str(tmp_path), filename=filename, md5=info.md5)
        except Exception as err:
            raise RuntimeError(
                f"Could not download dataset {name!r} from {info.url} ({err}). With no internet, "
                f"set the environment variable {MIRROR_ENV} to a folder that contains a "
                f"{name}/ mirror (the course's CI uses ../shared/data)."
            ) from err
        archive = tmp_path / filename
        if info.md5 is not None and not check_integrity(str(archive), info.md5):
            raise RuntimeError(
                f"The download of {name!r} from {info.url} has the wrong checksum; try again."
            )
        extracted = tmp_path / "extracted"
        if filename.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise RuntimeError(
                        f"The archive of {name!r} is corrupt (first bad member: {bad}); try again."
                    )
                zf.extractall(extracted)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(extracted, filter="data")
        source = extracted / info.archive_root
        _check_complete(source, name, info, where="downloaded")
        shutil.move(str(source), str(tmp_path / "ready"))
        try:
            os.replace(tmp_path / "ready", root)
        except OSError:
            if not root.is_dir():  # another process may have finished first
                raise


def is_image_file(path: str) -> bool:
    """Whether a file name has an image extension that the course reads."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as RGB (grayscale, palette, RGBA and GIF images are converted); name the file if it is unreadable (chapter 1)."""
    try:
        with Image.open(path) as img:
            img.load()
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
) -> transforms.Compose:
    """Preprocessing that matches a pretrained model; with ``train=True``, light augmentation (chapter 1).

    ``config`` is :func:`tlutils.models.data_config` of the model (default: the
    EfficientNet-Lite0 values mean = std = 0.5, bicubic, crop 0.875). ``image_size`` overrides
    the model's 224 px, e.g. 160 px to train faster on a CPU.
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
                transforms.RandomHorizontalFlip(),
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


def unreadable_images(paths: Sequence[str | Path]) -> list[Path]:
    """The files among ``paths`` that do not decode fully as images (chapter 5).

    Each file is decoded completely, so truncated files are found too, not only files
    whose header is broken.
    """
    bad = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            bad.append(Path(path))
    return bad


def _class_folder(root: Path, check_images: bool) -> datasets.ImageFolder:
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
    empty = [
        c
        for c in classes
        if not any(is_image_file(p.name) for p in (root / c).iterdir())
    ]
    if empty:
        raise ValueError(
            f"Class folder(s) {', '.join(str(root / c) for c in empty)} hold no images. "
            "Add images to them or remove them."
        )
    paths = sorted(
        p for c in classes for p in (root / c).iterdir() if is_image_file(p.name)
    )
    bad = set(unreadable_images(paths)) if check_images else set()
    if bad:
        names = ", ".join(str(p) for p in sorted(bad))
        warnings.warn(
            f"Skipping {len(bad)} unreadable image(s): {names}. Delete or replace them.",
            stacklevel=3,
        )
    return datasets.ImageFolder(
        str(root),
        loader=load_rgb,
        is_valid_file=lambda p: is_image_file(p) and Path(p) not in bad,
        allow_empty=False,
    )


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
    check_images: bool = True,
) -> DatasetSplits:
    """Your own image folder as train and validation datasets, flat or pre-split (chapter 5).

    ``root/<class>/<image>`` is split with a seeded, stratified ``val_fraction`` of every
    class; if ``root`` has ``train/`` and ``val/`` folders (each ``<class>/<image>``) they
    are used as they are, and must hold the same classes. A missing folder, fewer than two
    classes or an empty class folder raise an error that names it; files that do not
    decode (``check_images``) are listed in a warning and skipped.
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
