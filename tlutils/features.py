"""Frozen-backbone features, extracted once and cached (chapters 2 and 3).

The linear probe that reads them lives in :mod:`tlutils.probe`.

A frozen backbone gives the same features for an image every epoch, so running it every
epoch is wasted work. :func:`extract_features` runs it once over a dataset and stores
the pooled features on disk, under a key made from the backbone's weights, the image
files, the labels and the preprocessing: change any of them and the cache is not reused.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from .cache import atomic_write, digest
from .data import create_loader
from .datasets import cache_dir
from .train import _autocast, amp_dtype, get_device

__all__ = [
    "feature_extractor",
    "extract_features",
    "feature_cache_key",
    "check_cacheable_transform",
    "features_dataset",
    "stage_features",
]


def feature_extractor(model: nn.Module) -> nn.Module:
    """A copy of a classifier that returns pooled features instead of logits (chapter 2).

    For timm models this is ``reset_classifier(0)``; for torchvision models the last linear
    layer becomes ``nn.Identity()``. The copy is frozen and in eval mode.
    """
    from .models import head_location

    backbone = copy.deepcopy(model)
    if hasattr(backbone, "reset_classifier"):
        backbone.reset_classifier(0)
    else:
        parent, attr = head_location(backbone)
        if isinstance(parent, nn.Sequential):
            parent[attr] = nn.Identity()
        else:
            setattr(parent, attr, nn.Identity())
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone.eval()


def _samples(dataset: Dataset) -> tuple[list[tuple[str, int]], object]:
    """The (file, label) list of an ImageFolder or Subset, and its transform."""
    if isinstance(dataset, Subset):
        samples, transform = _samples(dataset.dataset)
        return [samples[i] for i in dataset.indices], transform
    if hasattr(dataset, "samples"):
        return list(dataset.samples), getattr(dataset, "transform", None)
    raise TypeError(
        f"Feature caching needs an ImageFolder (or a Subset of one) to know which files it holds; got "
        f"{type(dataset).__name__}. Pass cache=False to extract without a cache."
    )


def _deterministic_steps() -> tuple[type, ...]:
    """Preprocessing steps that give the same output for the same image, every time."""
    from timm.data import transforms as timm_t
    from torchvision import transforms as t
    from torchvision.transforms import _presets, v2

    names = ["Resize", "CenterCrop", "ToTensor", "PILToTensor", "ConvertImageDtype"]
    names += ["Normalize", "Grayscale", "Pad", "ToImage", "ToDtype", "ToPureTensor"]
    steps = [getattr(m, n) for m in (t, v2) for n in names if hasattr(m, n)]
    steps.append(_presets.ImageClassification)  # what weights.transforms() returns
    # timm's evaluation steps (create_transform(is_training=False), any crop_mode).
    timm_names = ["MaybeToTensor", "MaybePILToTensor", "ToTensor", "ToNumpy"]
    timm_names += ["CenterCropOrPad", "TrimBorder"]
    steps += [getattr(timm_t, n) for n in timm_names if hasattr(timm_t, n)]
    return tuple(step for step in steps if isinstance(step, type))


def _is_fixed_resize_keep_ratio(step: object) -> bool:
    """timm's ResizeKeepRatio, unless set to scale, stretch or interpolate at random."""
    from timm.data import transforms as timm_t

    return (
        type(step) is timm_t.ResizeKeepRatio
        and not step.random_scale_prob
        and not step.random_aspect_prob
        and not isinstance(step.interpolation, (tuple, list))  # interpolation="random"
    )


def _steps_of(transform: object) -> list:
    """The steps of a (nested) Compose or ``nn.Sequential``, or the transform itself."""
    from torchvision import transforms as t
    from torchvision.transforms import v2

    if type(transform) in (t.Compose, v2.Compose):
        inner = list(transform.transforms)
    elif type(transform) is nn.Sequential:
        inner = list(transform)
    else:
        return [transform]
    return [step for each in inner for step in _steps_of(each)]


def check_cacheable_transform(transform: object) -> None:
    """Refuse to cache features of a transform that is not made of fixed steps (chapter 2).

    A frozen backbone's features can be computed once only if the images are prepared
    the same way every time. Random steps (``RandomResizedCrop``, ``ColorJitter``,
    ``RandAugment``, ``GaussianBlur``...) change them every epoch, and a step we do not
    know (a ``Lambda``, your own class, a subclass) might, so each of those raises a
    ``ValueError`` that names it. Known fixed steps (``Resize``, ``CenterCrop``,
    ``ToTensor``, ``Normalize``..., a weights' ``transforms()``, timm's evaluation
    steps) match by exact type, not by name; ``Compose`` and ``nn.Sequential`` are
    looked into. ``None`` (no transform) is fine.
    """
    if transform is None:
        return
    allowed = _deterministic_steps()
    for step in _steps_of(transform):
        if type(step) in allowed or _is_fixed_resize_keep_ratio(step):
            continue
        raise ValueError(
            f"The dataset's transform contains {type(step).__name__}, which is not a known "
            "fixed preprocessing step: its output may differ from call to call (data "
            "augmentation), so the features cannot be cached. Give the dataset the "
            "evaluation transform (tl.create_transform(config)), or pass cache=False to "
            "extract without a cache."
        )


def _plain(value: object) -> object:
    """A setting as plain Python, so that its repr shows all of it (tensors in full)."""
    return value.tolist() if isinstance(value, torch.Tensor) else value


def _describe_transform(transform: object) -> str:
    """Each step's class and all its settings, also those that its ``repr`` leaves out.

    ``repr(v2.ToDtype(torch.float16))`` does not show the dtype, nor timm's
    ``CenterCropOrPad`` its fill, and timm's ``ToTensor`` shows a memory address.
    """
    if transform is None:
        return "None"
    lines = []
    for step in _steps_of(transform):
        settings = {
            name: _plain(value)
            for name, value in sorted(vars(step).items())
            if not name.startswith("_") and name != "training"
        }
        lines.append(f"{type(step).__module__}.{type(step).__qualname__}{settings}")
    return "\n".join(lines)


def _target_transform(dataset: Dataset) -> object:
    """The ``target_transform`` of an ImageFolder or a (nested) Subset of one."""
    if isinstance(dataset, Subset):
        return _target_transform(dataset.dataset)
    return getattr(dataset, "target_transform", None)


def feature_cache_key(backbone: nn.Module, dataset: Dataset, extra: str = "") -> str:
    """A cache key that changes with the weights, structure, files, labels or preprocessing (chapter 2).

    A wrapper whose behaviour depends on a setting that its ``repr`` does not show (say, which
    stage to return) must pass that setting as ``extra``. A transform with random or
    unknown steps raises ``ValueError`` (:func:`check_cacheable_transform`), and so
    does a ``target_transform``: the cached labels would not follow a change to it.
    """
    samples, transform = _samples(dataset)
    check_cacheable_transform(transform)
    if _target_transform(dataset) is not None:
        raise ValueError(
            "The dataset has a target_transform, which the feature cache cannot see "
            "into: change it and stale labels would be reused. Remove it (map the "
            "labels after extracting), or pass cache=False to extract without a cache."
        )
    files = []
    for path, label in samples:
        stat = os.stat(path)
        files.append(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}")
    # the structure (e.g. where a wrapper cuts the network) is in the repr
    return digest(type(backbone).__name__, repr(backbone), backbone,
                  _describe_transform(transform), files, extra)  # fmt: skip


def _default_batch_size(dataset: Dataset, device: torch.device) -> int:
    """64 images per batch on a GPU. On a CPU, small batches keep the caches warm: 8 images
    per batch run about twice as fast as 64 at 224 px (measured), but images of 64 x 64
    pixels or less are too small to keep the cores busy in 8s: 64 per batch (1.6x faster)."""
    if device.type == "cuda":
        return 64
    image = dataset[0][0] if len(dataset) else None
    if isinstance(image, torch.Tensor) and image.shape[-2:].numel() <= 64 * 64:
        return 64
    return 8


@torch.no_grad()
def _run(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    progress: bool,
    mixed_precision: bool = False,
):
    # A copy, so that the caller's backbone stays where it was, in its memory format.
    # channels_last is faster for convolutions on CPUs and on recent GPUs.
    backbone = copy.deepcopy(backbone)
    backbone = backbone.to(device, memory_format=torch.channels_last).eval()
    features, labels = [], []
    loader = create_loader(dataset, batch_size=batch_size, shuffle=False)
    # A bar that is updated by hand: tqdm.auto's wrapper of an iterable starts the loader
    # (and its worker processes) once more than needed.
    bar = tqdm(total=len(loader), desc="features", leave=False, disable=not progress)
    for images, targets in loader:
        images = images.to(device, memory_format=torch.channels_last)
        with _autocast(device, mixed_precision):
            out = backbone(images)
        features.append(out.float().flatten(1).cpu())
        labels.append(targets)
        bar.update()
    bar.close()
    return torch.cat(features), torch.cat(labels)


def extract_features(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int | None = None,
    cache: bool = True,
    device: torch.device | str | None = None,
    progress: bool = True,
    key_extra: str = "",
    mixed_precision: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a frozen ``backbone`` once over ``dataset``; return ``(features, labels)`` (chapter 2).

    Outputs are flattened to one vector per image. ``batch_size`` defaults to 64 on a GPU;
    on a CPU to 8, or 64 for images of 64 x 64 pixels or less. ``key_extra`` goes into the
    cache key: pass any setting of ``backbone`` that changes its output but not its
    weights or ``repr``. The backbone runs on a copy of itself (yours is not moved) in
    float32, or in mixed precision on a GPU with ``mixed_precision=True``
    (:func:`tlutils.train.amp_dtype`). With ``cache=True`` the result is saved in
    ``<cache>/features/<key>.pt`` (written atomically) and loaded from there next time;
    the key includes the device type and the float type, so features computed on a GPU
    are not reused on a CPU.
    """
    device = torch.device(device) if device is not None else get_device()
    path = None
    if cache:
        dtype = amp_dtype(device) if mixed_precision else None
        where = f"|device={device.type}|dtype={dtype or torch.float32}"
        key = feature_cache_key(backbone, dataset, key_extra + where)
        path = cache_dir() / "features" / f"{key}.pt"
        if path.is_file():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                return stored["features"], stored["labels"]
            except Exception:  # a damaged cache file is recomputed, never trusted
                path.unlink(missing_ok=True)
    batch_size = batch_size or _default_batch_size(dataset, device)
    features, labels = _run(
        backbone, dataset, batch_size, device, progress, mixed_precision
    )
    if path is not None:
        stored = {"features": features, "labels": labels}
        atomic_write(path, lambda tmp: torch.save(stored, tmp))
    return features, labels


def features_dataset(features: torch.Tensor, labels: torch.Tensor) -> TensorDataset:
    """Cached features as a dataset, so a head trains on them with the usual DataLoader (chapter 2)."""
    return TensorDataset(features, labels)


def stage_features(
    model: nn.Module, dataset: Dataset, stages: Sequence[int] | None = None, **kwargs
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Pooled features of chosen stages of Lite0: ``({stage: features}, labels)`` (chapter 3).

    Runs :class:`tlutils.stages.StageFeatures` once through :func:`extract_features`
    (cached on disk; keyword arguments are passed on) and splits the vector per stage.
    """
    from .stages import StageFeatures, stage_channels

    backbone = StageFeatures(model, stages)
    features, labels = extract_features(backbone, dataset, **kwargs)
    chosen = backbone.stages.tolist()
    sizes = [stage_channels(model)[s] for s in chosen]
    if features.shape[1] != sum(sizes):
        raise RuntimeError(
            f"Expected {sum(sizes)} features per image, got {features.shape[1]}."
        )
    return dict(zip(chosen, torch.split(features, sizes, dim=1), strict=True)), labels
