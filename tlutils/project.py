"""Your own project: train on your image folder with the recipe, predict on new images (chapter 5).

:func:`train_folder` is chapter 4's recipe on a folder of your images (flat or already
split into ``train/`` and ``val/``): a new head, a warm-up of the head on the frozen body,
then fine-tuning with BatchNorm statistics fixed, the best epoch kept and early stopping.
:func:`predict_images` gives the top classes of new images with a trained model.
"""

from __future__ import annotations

import functools
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from sklearn.metrics import classification_report
from torch import nn

from . import finetune
from .checkpoint import TrainedModel, load_model, trained_model
from .data import (
    create_loader,
    create_transform,
    is_image_file,
    load_image_folder,
    load_rgb,
    targets_of,
)
from .models import DEFAULT_MODEL, create_model, data_config, replace_head
from .train import get_device, predict, seed_everything

__all__ = ["TRAIN_STRATEGIES", "train_folder", "Prediction", "predict_images"]

TRAIN_STRATEGIES = ("linear_probe", "fine_tune")
"""What :func:`train_folder` trains: the head alone, or the head then the whole body."""


def class_weights(targets: list[int], num_classes: int) -> torch.Tensor:
    """Loss weights inversely proportional to each class's share of the training set (chapter 5)."""
    counts = Counter(targets)
    total = len(targets)
    return torch.tensor(
        [total / (num_classes * counts[c]) for c in range(num_classes)],
        dtype=torch.float32,
    )


def train_folder(
    folder: str | Path,
    strategy: str = "fine_tune",
    image_size: int = 160,
    warm_up_epochs: int = 3,
    fine_tune_epochs: int = 5,
    lr: float = 1e-4,
    patience: int | None = 2,
    class_weighted: bool = False,
    batch_size: int = 32,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Train EfficientNet-Lite0 on your folder with chapter 4's recipe (chapter 5).

    ``strategy="linear_probe"`` trains only the new head on the frozen body;
    ``"fine_tune"`` warms the head up, then fine-tunes everything at ``lr`` with BatchNorm
    statistics fixed. The epoch with the best validation loss is kept and training stops
    after ``patience`` epochs without improvement. ``class_weighted=True`` weighs the
    loss by inverse class frequency, for imbalanced folders. At the end a per-class report
    on the validation images is printed and stored in the history (``"report"``).
    """
    if strategy not in TRAIN_STRATEGIES:
        raise ValueError(
            f"strategy must be one of {TRAIN_STRATEGIES}, got {strategy!r}."
        )
    seed_everything(seed)
    device = torch.device(device) if device is not None else get_device()
    model = create_model(DEFAULT_MODEL)
    config = data_config(model)
    data = load_image_folder(
        folder,
        create_transform(config, train=True, image_size=image_size),
        create_transform(config, image_size=image_size),
        seed=seed,
    )
    replace_head(model, len(data.classes))
    loss_fn = nn.functional.cross_entropy
    if class_weighted:
        weight = class_weights(targets_of(data.train), len(data.classes)).to(device)
        loss_fn = functools.partial(nn.functional.cross_entropy, weight=weight)
    train = create_loader(data.train, batch_size, shuffle=True, seed=seed)
    val = create_loader(data.val, batch_size=64)
    common = dict(loss_fn=loss_fn, device=device, progress=progress, patience=patience)
    if strategy == "linear_probe":
        history = finetune.warm_up(
            model, train, val, warm_up_epochs, keep_best=True, **common
        )
    else:
        history = finetune.warm_up_then_fine_tune(
            model, train, val, warm_up_epochs, fine_tune_epochs, lr=lr, **common
        )
    logits, targets = predict(model, val, device)
    report = classification_report(
        targets, logits.argmax(1), labels=range(len(data.classes)),
        target_names=data.classes, zero_division=0,
    )  # fmt: skip
    if progress:
        print(report)
    trained = trained_model(
        model.cpu(), data.classes, DEFAULT_MODEL, image_size, history
    )
    trained.history["report"] = report
    trained.model.eval()
    return trained


@dataclass
class Prediction:
    """The top classes of one image, most probable first (chapter 5)."""

    file: str
    classes: list[str]
    probabilities: list[float]


def _image_files(path: Path) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist. Give an image file or a folder of images."
        )
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p.name))
    if not files:
        raise ValueError(f"{path} holds no image files (.jpg, .png, .bmp, .gif ...).")
    return files


def _readable(files: list[Path]) -> list:
    images, kept = [], []
    for file in files:
        try:
            images.append(load_rgb(file))
            kept.append(file)
        except RuntimeError as err:
            warnings.warn(f"Skipping {err}", stacklevel=3)
    return list(zip(kept, images, strict=True))


@torch.no_grad()
def predict_images(
    trained: TrainedModel | str | Path,
    path: str | Path,
    top_k: int = 3,
    batch_size: int = 16,
) -> list[Prediction]:
    """Top-``k`` classes with probabilities for an image file or every image in a folder (chapter 5).

    ``trained`` is a :class:`~tlutils.checkpoint.TrainedModel` or the path of a
    checkpoint. Unreadable images are skipped with a warning that names them.
    """
    if isinstance(trained, (str, Path)):
        trained = load_model(trained)
    transform = trained.transform()
    model = trained.model.eval()
    device = next(model.parameters()).device
    k = max(1, min(top_k, len(trained.classes)))
    rows = []
    pairs = _readable(_image_files(Path(path)))
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = torch.stack([transform(img) for _, img in chunk]).to(device)
        probs = model(batch).float().softmax(1).cpu()
        top = probs.topk(k, dim=1)
        for (file, _), p, i in zip(chunk, top.values, top.indices, strict=True):
            names = [trained.classes[j] for j in i.tolist()]
            rows.append(Prediction(str(file), names, [round(v, 6) for v in p.tolist()]))
    return rows
