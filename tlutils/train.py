"""One training loop for every model in the course (chapters 2-4).

``fit`` trains any ``nn.Module`` that maps a batch of inputs to class logits: a whole
network on images, or a small head on cached features. It records a :class:`History`
per epoch, can keep the best epoch and stop early, calls a hook after every epoch, and
picks the device itself (CUDA, then Apple MPS, then CPU). The fine-tuning recipe of
chapter 4 (:mod:`tlutils.finetune`) is a few calls of ``freeze``/``unfreeze`` around it.

One meaning per keyword, in this module and everywhere in tlutils:

* ``lr``: the learning rate (of the head, where stages get different rates);
* ``opt``: the optimiser's *name* (``"adam"``, ``"adamw"``, ``"sgd"``);
  ``optimizer``: an optimiser *object* you built yourself, which then replaces ``opt``;
* ``bn_stats``: what BatchNorm layers do with their running statistics (:data:`BNStats`);
* ``monitor``, ``keep_best``, ``patience``: which validation number picks the best epoch,
  whether its weights are restored at the end, and how many epochs without improvement
  end training early;
* ``schedule``, ``warmup_steps``: the learning rate over the run (:data:`Schedule`),
  after a linear warm-up of that many steps.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import smoke
from .models import set_batchnorm_eval

__all__ = [
    "BNStats",
    "Monitor",
    "OptName",
    "Schedule",
    "get_device",
    "amp_dtype",
    "model_device",
    "seed_everything",
    "History",
    "create_optimizer",
    "lr_schedule",
    "fit",
    "evaluate",
    "predict",
    "step_seconds",
]

BNStats = Literal["fixed", "update_unfrozen", "update_all"]
"""What BatchNorm layers do with their running statistics while a model trains:

* ``"fixed"``: every BatchNorm layer keeps its (pretrained) statistics: eval mode;
* ``"update_unfrozen"``: layers with trainable parameters update theirs, frozen ones keep
  theirs (right for a model trained from scratch, and for a head on a frozen body);
* ``"update_all"``: every layer updates its statistics, frozen or not: what
  ``model.train()`` alone does (chapter 2 shows the damage on a frozen body).
"""

Monitor = Literal["val_loss", "val_acc"]
"""The validation number that picks the best epoch."""

OptName = Literal["adam", "adamw", "sgd"]
"""Optimisers by name: Adam, AdamW, SGD (with ``momentum``, default 0.9)."""

Schedule = Literal["constant", "cosine"]
"""The learning rate over a run of :func:`fit`, per step (batch):

* ``"constant"``: every step at the optimiser's rate (after the warm-up, if any);
* ``"cosine"``: from the optimiser's rate down to zero along half a cosine
  (Loshchilov and Hutter 2017), after the warm-up.
"""


def _check_choice(name: str, value: object, choices: type) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}."
        )


def get_device() -> torch.device:
    """The fastest device here: CUDA, then Apple MPS, then the CPU (chapter 1)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if (
        getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    ):
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so that a run can be repeated (chapter 1)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


_SERIES = ("train_loss", "train_acc", "val_loss", "val_acc", "seconds")


@dataclass
class History:
    """What :func:`fit` records per epoch, and which epoch was best (chapters 2-4).

    ``phase_starts`` holds the epoch where each phase began (chapter 4 joins the warm-up
    and the fine-tuning phase); ``best_epoch`` is the 0-based epoch whose score by the
    monitored number was best (the one restored with ``keep_best``), counted over all
    phases; ``stopped_early`` says whether ``patience`` ran out.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    phase_starts: list[int] = field(default_factory=lambda: [0])
    best_epoch: int | None = None
    stopped_early: bool = False

    def best_val_acc(self) -> float:
        """The highest validation accuracy seen (NaN if there was no validation)."""
        return max(self.val_acc) if self.val_acc else float("nan")

    def extend(self, other: History) -> History:
        """Append another phase's epochs, shifting its phase starts and best epoch (chapter 4)."""
        offset = len(self.train_loss)
        for name in _SERIES:
            getattr(self, name).extend(getattr(other, name))
        own = (
            self.phase_starts if offset else []
        )  # an empty history takes the other's phases
        self.phase_starts = [*own, *(offset + s for s in other.phase_starts)]
        if other.best_epoch is not None:
            self.best_epoch = offset + other.best_epoch
        self.stopped_early = other.stopped_early
        return self


def create_optimizer(
    params: Iterable | list[dict],
    opt: OptName = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """An optimiser by name on parameters or parameter groups (chapters 2 and 4)."""
    _check_choice("opt", opt, OptName)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}.")
    if opt == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    kind = torch.optim.Adam if opt == "adam" else torch.optim.AdamW
    return kind(params, lr=lr, weight_decay=weight_decay)


def lr_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    schedule: Schedule = "cosine",
    warmup_steps: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step learning-rate schedule: linear warm-up, then constant or cosine (chapter 4).

    For ``warmup_steps`` steps the rate rises linearly to the optimiser's rate (of every
    parameter group: discriminative rates keep their ratios); then it stays there
    (``"constant"``) or falls to zero along half a cosine over the remaining steps of
    ``total_steps`` (``"cosine"``). Call ``step()`` after every optimiser step, as
    :func:`fit` does.
    """
    _check_choice("schedule", schedule, Schedule)
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}.")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"warmup_steps must be from 0 to total_steps - 1 ({total_steps - 1}), "
            f"got {warmup_steps}."
        )
    decay_steps = total_steps - warmup_steps

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The float type of mixed precision on ``device``, or ``None`` where the course
    trains in float32 (chapter 2): bfloat16 on GPUs that compute in it natively (NVIDIA
    Ampere and newer: no loss scaling needed), float16 with loss scaling on older CUDA
    GPUs (Colab's T4), float32 on CPUs and Apple GPUs."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def _autocast(device: torch.device, enabled: bool):
    """Mixed precision where :func:`amp_dtype` allows it, else nothing: no autocast
    context at all, since ``torch.autocast("mps", enabled=False)`` raises on torch < 2.5."""
    dtype = amp_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _grad_scaler(device: torch.device, enabled: bool):
    """Loss scaling for float16 only. It starts at 2**10, not PyTorch's 2**16: each step
    whose scaled gradients overflow is skipped while the scale halves, and a budget of a
    few steps cannot afford to skip its first five."""
    if not enabled or amp_dtype(device) != torch.float16:
        return None
    return torch.amp.GradScaler("cuda", init_scale=2.0**10)


def model_device(model: nn.Module) -> torch.device:
    """Where a model's parameters (or buffers) are; the CPU for a model without any
    (chapter 2)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _run_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """The device to run ``model`` on: ``device`` (the model is moved there) or, if
    ``None``, where the model already is (nothing moves)."""
    if device is None:
        return model_device(model)
    device = torch.device(device)
    model.to(device)
    return device


def _check_class_count(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """A clear error when the data has more classes than the model has outputs."""
    if logits.ndim == 2 and targets.numel() and int(targets.max()) >= logits.shape[1]:
        raise ValueError(
            f"The model has {logits.shape[1]} outputs, but the data has label "
            f"{int(targets.max())}: give the model a head with one output per class, e.g. "
            "tl.replace_head(model, num_classes=len(dataset.classes))."
        )


def _set_train_mode(model: nn.Module, bn_stats: BNStats) -> None:
    model.train()
    if bn_stats != "update_all":
        set_batchnorm_eval(model, only_frozen=bn_stats == "update_unfrozen")


def _train_epoch(
    model, loader, optimizer, loss_fn, device, scaler, bn_stats, scheduler, amp
):
    """One pass over ``loader`` with gradient steps; returns mean ``(loss, accuracy)``."""
    _set_train_mode(model, bn_stats)
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, targets in smoke.batches(loader):  # every batch, unless smoke-tested
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with _autocast(device, amp):
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
        raise ValueError(
            "The training loader yielded no batches; is the dataset empty?"
        )
    return total_loss / seen, correct / seen


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    mixed_precision: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and true labels for every item of ``loader``, on the CPU (chapter 1).

    The model runs where it is (``device=None``), or is moved to ``device`` first, as
    :func:`fit` does; the inputs follow it. ``mixed_precision`` means what it means in
    :func:`fit` (:func:`amp_dtype`: faster on a GPU, slightly less exact); off by default,
    so predictions are float32 everywhere.
    """
    device = _run_device(model, device)
    model.eval()
    logits, targets = [], []
    for inputs, target in loader:
        with _autocast(device, mixed_precision):
            logits.append(model(inputs.to(device)).float().cpu())
        targets.append(target)
    return torch.cat(logits), torch.cat(targets)


def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: Callable = nn.functional.cross_entropy,
    device: torch.device | str | None = None,
    mixed_precision: bool = False,
) -> tuple[float, float]:
    """Mean ``(loss, accuracy)`` of ``model`` on ``loader`` (chapter 2).

    The model runs as in :func:`predict`; the loss is computed on the same device, so a
    loss with class weights on the GPU (as :func:`fit` trains with) works here too.
    """
    device = _run_device(model, device)
    logits, targets = predict(model, loader, device, mixed_precision)
    _check_class_count(logits, targets)
    loss = loss_fn(logits.to(device), targets.to(device)).item()
    return loss, (logits.argmax(1) == targets).float().mean().item()


def fit(
    model: nn.Module,
    train_loader: DataLoader | Iterable,
    val_loader: DataLoader | Iterable | None = None,
    epochs: int = 5,
    lr: float = 1e-3,
    opt: OptName = "adam",
    optimizer: torch.optim.Optimizer | None = None,
    weight_decay: float = 0.0,
    loss_fn: Callable = nn.functional.cross_entropy,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    schedule: Schedule = "constant",
    warmup_steps: int = 0,
    bn_stats: BNStats = "update_unfrozen",
    monitor: Monitor = "val_loss",
    keep_best: bool = False,
    patience: int | None = None,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    mixed_precision: bool = True,
    device: torch.device | str | None = None,
    progress: bool = True,
    desc: str = "epochs",
) -> History:
    """Train ``model`` for ``epochs`` and return its :class:`History` (chapters 2-4).

    Only parameters with ``requires_grad=True`` train, with the optimiser named by ``opt``
    at ``lr`` (or your own ``optimizer``). ``scheduler`` steps after every batch; or name
    a ``schedule`` (:data:`Schedule`, e.g. ``"cosine"``) with ``warmup_steps``, and fit
    builds it (:func:`lr_schedule`) over ``epochs`` times the loader's batches on
    whatever optimiser it uses (the default, constant without warm-up, builds none).
    ``bn_stats`` says which BatchNorm layers update their statistics (:data:`BNStats`).
    With a ``val_loader``, the epoch with the best ``monitor`` is recorded; ``keep_best``
    restores its weights at the end and ``patience`` stops after that many epochs without
    improvement. ``on_epoch_end(epoch, model)`` runs after every epoch (chapter 4 unfreezes
    stages and probes features in it). Mixed precision is used on CUDA GPUs only
    (:func:`amp_dtype`), for training and for the validation after each epoch. ``desc``
    labels the progress bar. ``stopped_early`` is True only when patience ended training
    before its last epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be at least 1 (or None), got {patience}.")
    _check_choice("bn_stats", bn_stats, BNStats)
    _check_choice("monitor", monitor, Monitor)
    _check_choice("schedule", schedule, Schedule)
    scheduled = schedule != "constant" or warmup_steps > 0
    if scheduled and scheduler is not None:
        raise ValueError(
            "Give either a scheduler object or a schedule by name, not both."
        )
    if (keep_best or patience) and val_loader is None:
        raise ValueError(
            "keep_best and patience need a val_loader to pick the best epoch."
        )
    epochs = smoke.epochs(epochs)  # as asked, unless smoke-tested
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    if optimizer is None:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                "Every parameter is frozen: nothing to train. Unfreeze the head (tl.unfreeze)."
            )
        optimizer = create_optimizer(params, opt, lr, weight_decay=weight_decay)
    if scheduled:
        scheduler = lr_schedule(
            optimizer, epochs * len(train_loader), schedule, warmup_steps
        )
    scaler = _grad_scaler(device, mixed_precision)
    history = History()
    best_score, best_state = -math.inf, None
    bar = tqdm(range(epochs), desc=desc, disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        loss, acc = _train_epoch(
            model, train_loader, optimizer, loss_fn, device, scaler, bn_stats, scheduler,
            mixed_precision,
        )  # fmt: skip
        history.train_loss.append(loss)
        history.train_acc.append(acc)
        if val_loader is not None:
            val_loss, val_acc = evaluate(  # every batch, unless smoke-tested
                model, smoke.batches(val_loader), loss_fn, device, mixed_precision
            )
            history.val_loss.append(val_loss)
            history.val_acc.append(val_acc)
            score = -val_loss if monitor == "val_loss" else val_acc
            if score > best_score:
                best_score, history.best_epoch = score, epoch
                if keep_best:
                    best_state = copy.deepcopy(model.state_dict())
        history.seconds.append(time.perf_counter() - start)
        bar.set_postfix(
            {
                k: f"{getattr(history, k)[-1]:.3f}"
                for k in _SERIES[:4]
                if getattr(history, k)
            }
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
        best = (
            history.best_epoch if history.best_epoch is not None else -1
        )  # NaN losses
        if patience is not None and epoch - best >= patience:
            history.stopped_early = epoch < epochs - 1  # not early on the last epoch
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def step_seconds(
    model: nn.Module,
    batch_size: int,
    image_size: int,
    device: torch.device | str | None = None,
    steps: int = 2,
) -> float:
    """Seconds of one training step of :func:`fit` (the same autocast, loss scaling and
    synchronisation) on ``batch_size`` random images, on a copy of ``model``; timed over
    ``steps`` steps after an untimed epoch of warm-up: ``diagnose``'s time estimate
    (chapter 5)."""
    device = torch.device(device) if device is not None else get_device()
    model = copy.deepcopy(model)
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.zeros(batch_size, dtype=torch.long)
    history = fit(model, [(x, y)] * steps, epochs=2, device=device, progress=False)
    return history.seconds[-1] / steps
