"""One training loop for every model in the course (chapters 2-4).

``fit`` trains any ``nn.Module`` that maps a batch of inputs to class logits: a whole
network on images, or a small head on cached features. It records a
:class:`History` per epoch and picks the device itself (CUDA, then Apple MPS, then CPU).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .models import set_batchnorm_eval

__all__ = ["get_device", "seed_everything", "History", "fit", "train_epoch", "evaluate", "predict"]


def get_device() -> torch.device:
    """The fastest device here: CUDA, then Apple MPS, then the CPU (chapter 1)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so that a run can be repeated (chapter 1)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


@dataclass
class History:
    """Loss and accuracy per epoch, for training and validation, and seconds per epoch."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def best_val_acc(self) -> float:
        """The highest validation accuracy seen (NaN if there was no validation)."""
        return max(self.val_acc) if self.val_acc else float("nan")

    def extend(self, other: History) -> History:
        """Append another run's epochs (e.g. phase 2 after the warm-up, chapter 4)."""
        for name in ("train_loss", "train_acc", "val_loss", "val_acc", "seconds"):
            getattr(self, name).extend(getattr(other, name))
        return self


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled and device.type == "cuda")


def _check_class_count(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """A clear error when the data has more classes than the model has outputs (e.g. the ImageNet head was kept)."""
    if logits.ndim == 2 and targets.numel() and int(targets.max()) >= logits.shape[1]:
        raise ValueError(
            f"The model has {logits.shape[1]} outputs, but the data has label {int(targets.max())}: give the model "
            "a head with one output per class, e.g. tl.replace_head(model, num_classes=len(dataset.classes))."
        )


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable = nn.functional.cross_entropy,
    device: torch.device | str | None = None,
    scaler: torch.amp.GradScaler | None = None,
    bn_eval: str = "frozen",
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = False,
) -> tuple[float, float]:
    """One pass over ``loader`` with gradient steps; returns mean ``(loss, accuracy)`` (chapter 2).

    ``bn_eval`` says which BatchNorm layers keep their running statistics fixed:
    ``"frozen"`` (those whose parameters are frozen, the default), ``"all"`` or ``"none"``.
    """
    device = torch.device(device) if device is not None else get_device()
    model.train()
    if bn_eval not in ("frozen", "all", "none"):
        raise ValueError(f"bn_eval must be 'frozen', 'all' or 'none', got {bn_eval!r}.")
    if bn_eval != "none":
        set_batchnorm_eval(model, only_frozen=bn_eval == "frozen")
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, targets in tqdm(loader, desc="train", leave=False, disable=not progress):
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with _autocast(device, scaler is not None):
            logits = model(inputs)
            _check_class_count(logits, targets)
            loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
    if seen == 0:
        raise ValueError("The training loader yielded no batches; is the dataset empty?")
    return total_loss / seen, correct / seen


@torch.no_grad()
def predict(
    model: nn.Module, loader: Iterable, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and true labels for every item of ``loader``, on the CPU (chapter 1)."""
    device = torch.device(device) if device is not None else get_device()
    model.eval()
    logits, targets = [], []
    for inputs, target in loader:
        with _autocast(device, device.type == "cuda"):
            logits.append(model(inputs.to(device)).float().cpu())
        targets.append(target)
    return torch.cat(logits), torch.cat(targets)


def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: Callable = nn.functional.cross_entropy,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """Mean ``(loss, accuracy)`` of ``model`` on ``loader`` (chapter 2)."""
    logits, targets = predict(model, loader, device)
    _check_class_count(logits, targets)
    return loss_fn(logits, targets).item(), (logits.argmax(1) == targets).float().mean().item()


def fit(
    model: nn.Module,
    train_loader: DataLoader | Iterable,
    val_loader: DataLoader | Iterable | None = None,
    epochs: int = 5,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: Callable = nn.functional.cross_entropy,
    device: torch.device | str | None = None,
    bn_eval: str = "frozen",
    mixed_precision: bool = True,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` for ``epochs`` and return its :class:`History` (chapters 2-4).

    Only parameters with ``requires_grad=True`` are trained. Without ``optimizer``,
    Adam with learning rate ``lr`` is used on those. ``scheduler`` is stepped after every
    batch. Mixed precision is used on CUDA only. ``bn_eval`` is passed to :func:`train_epoch`.
    """
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    if optimizer is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("Every parameter is frozen: nothing to train. Unfreeze the head (tlutils.unfreeze).")
        optimizer = torch.optim.Adam(params, lr=lr)
    scaler = torch.amp.GradScaler("cuda") if mixed_precision and device.type == "cuda" else None
    history = History()
    bar = tqdm(range(epochs), desc="epochs", disable=not progress)
    for _ in bar:
        start = time.perf_counter()
        loss, acc = train_epoch(model, train_loader, optimizer, loss_fn, device, scaler, bn_eval, scheduler)
        history.train_loss.append(loss)
        history.train_acc.append(acc)
        if val_loader is not None:
            val_loss, val_acc = evaluate(model, val_loader, loss_fn, device)
            history.val_loss.append(val_loss)
            history.val_acc.append(val_acc)
        history.seconds.append(time.perf_counter() - start)
        postfix = {"loss": f"{loss:.3f}", "acc": f"{acc:.3f}"}
        if val_loader is not None:
            postfix["val_acc"] = f"{history.val_acc[-1]:.3f}"
        bar.set_postfix(postfix)
    return history
