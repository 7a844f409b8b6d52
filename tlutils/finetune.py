"""Warm-up fine-tuning: train a new head on a frozen body, then unfreeze with small learning rates (chapter 4).

The recipe in two composable phases:

1. :func:`warm_up_head` freezes the body and trains only the new, randomly initialised head;
2. :func:`fine_tune` unfreezes the body (all of it, or the top stages), gives every stage its own
   learning rate (:func:`param_groups`, discriminative learning rates), optionally unfreezes stage
   by stage (gradual unfreezing), keeps the best checkpoint and stops early.

:func:`warmup_then_finetune` runs both and joins their histories. Both phases are built on
:func:`tlutils.fit`'s pieces (:func:`tlutils.train.train_epoch`, :func:`tlutils.train.evaluate`).

For CPUs, :func:`split_at_stage` cuts a timm EfficientNet into a frozen bottom, whose outputs
can be computed once and cached, and a trainable top that keeps the original parameter names.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .models import freeze, get_head, unfreeze
from .train import History, evaluate, get_device, train_epoch

__all__ = [
    "FineTuneHistory",
    "stages",
    "param_groups",
    "make_optimizer",
    "warm_up_head",
    "fine_tune",
    "warmup_then_finetune",
    "split_at_stage",
    "linear_probe_accuracy",
]


@dataclass
class FineTuneHistory(History):
    """A :class:`tlutils.History` that also records the phases, the best epoch and early stopping (chapter 4).

    ``phase_starts`` holds the epoch index where each phase began; ``best_epoch`` is the epoch
    whose weights were kept (0-based, counted over all phases), ``stopped_early`` whether
    patience ran out.
    """

    phase_starts: list[int] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def extend(self, other: History) -> FineTuneHistory:
        """Append another phase's epochs; its phase starts and best epoch are shifted accordingly."""
        offset = len(self.train_loss)
        super().extend(other)
        if isinstance(other, FineTuneHistory):
            starts = other.phase_starts or [0]
            self.phase_starts.extend(offset + s for s in starts)
            if other.best_epoch is not None:
                self.best_epoch = offset + other.best_epoch
            self.stopped_early = other.stopped_early
        else:
            self.phase_starts.append(offset)
        return self


def stages(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The model's parameter groups from input to output, as ``(name, [name prefixes])`` (chapter 4).

    For timm EfficientNet/MobileNet-style models (``conv_stem``, ``blocks``, ``conv_head``) the
    stages are ``stem``, ``blocks.0`` ... ``blocks.N``, ``conv_head`` (with its BatchNorm) and
    ``head`` (the classifier). For other models every top-level child with parameters is one
    stage, and the classifier found by :func:`tlutils.get_head` is the last. Stages without
    parameters (e.g. parts replaced by ``nn.Identity``) are left out.
    """
    names = dict(model.named_children())
    head = get_head(model)
    head_names = [n for n, m in names.items() if m is head]
    if not head_names:  # torchvision models nest the last layer, e.g. classifier[6]
        head_names = [n for n, m in model.named_modules() if m is head and n]  # pragma: no cover - torchvision case
    result: list[tuple[str, list[str]]] = []
    if "blocks" in names and "conv_stem" in names:
        result.append(("stem", [n for n in ("conv_stem", "bn1") if n in names]))
        result.extend((f"blocks.{i}", [f"blocks.{i}"]) for i in range(len(names["blocks"])))
        result.append(("conv_head", [n for n in ("conv_head", "bn2") if n in names]))
        taken = {p for _, prefixes in result for p in prefixes} | {"blocks"}
        rest = [n for n in names if n not in taken and n not in head_names]
        if rest:
            result.append(("other", rest))
    else:
        result.extend((n, [n]) for n in names if n not in head_names)
    result.append(("head", head_names))

    def has_params(prefixes: list[str]) -> bool:
        return any(_matches(name, prefixes) for name, _ in model.named_parameters())

    return [(name, prefixes) for name, prefixes in result if prefixes and has_params(prefixes)]


def _matches(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def param_groups(
    model: nn.Module,
    base_lr: float,
    decay: float = 1.0,
    weight_decay: float = 0.0,
    trainable_only: bool = False,
) -> list[dict]:
    """Optimizer parameter groups with discriminative learning rates, one group per stage (chapter 4).

    The head gets ``base_lr``; each stage below gets ``decay`` times the rate of the stage above
    (Howard and Ruder 2018 use ``decay = 1 / 2.6``). ``decay=1`` gives every stage the same rate.
    Every group has a ``"name"`` key. With ``trainable_only=False`` (the default) frozen
    parameters are included too: they get no gradient, so the optimizer skips them until they are
    unfrozen, which is what gradual unfreezing needs.
    """
    if not base_lr > 0:
        raise ValueError(f"base_lr must be positive, got {base_lr}.")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}.")
    ordered = stages(model)
    groups = []
    seen: set[int] = set()
    for depth, (name, prefixes) in enumerate(reversed(ordered)):
        params = [
            p
            for n, p in model.named_parameters()
            if _matches(n, prefixes) and id(p) not in seen and (p.requires_grad or not trainable_only)
        ]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "lr": base_lr * decay**depth, "weight_decay": weight_decay, "name": name})
    missing = [n for n, p in model.named_parameters() if id(p) not in seen and (p.requires_grad or not trainable_only)]
    if missing:
        raise ValueError(f"Parameters outside every stage: {missing[:5]}; pass a model that stages() understands.")
    return list(reversed(groups))


def make_optimizer(
    params: Iterable | list[dict],
    name: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """``"adam"``, ``"adamw"`` or ``"sgd"`` (with momentum) on parameters or parameter groups (chapter 4)."""
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer {name!r}; use 'adam', 'adamw' or 'sgd'.")


def _head_prefixes(model: nn.Module) -> list[str]:
    return stages(model)[-1][1]


def warm_up_head(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    epochs: int = 3,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    device: torch.device | str | None = None,
) -> FineTuneHistory:
    """Phase 1: freeze everything but the head and train the head alone (chapter 4).

    The body's BatchNorm layers stay in eval mode (they are frozen). Returns the history;
    afterwards only the head is trainable.
    """
    freeze(model)
    unfreeze(model, _head_prefixes(model))
    head_params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(head_params, optimizer, lr, weight_decay=weight_decay)
    return _train(model, train_loader, val_loader, epochs, opt, device, bn_eval="frozen")


def fine_tune(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    epochs: int = 5,
    lr: float = 1e-4,
    decay: float = 1.0,
    unfreeze_stages: Sequence[str] | None = None,
    gradual: bool = False,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    bn_eval: str = "frozen",
    patience: int | None = None,
    keep_best: bool = True,
    monitor: str = "val_loss",
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    device: torch.device | str | None = None,
) -> FineTuneHistory:
    """Phase 2: unfreeze the body (or its top stages) and train with small, per-stage learning rates (chapter 4).

    ``unfreeze_stages`` names the stages to unfreeze (see :func:`stages`; default: all). ``lr``
    is the head's rate; ``decay`` < 1 gives lower stages lower rates (:func:`param_groups`).
    With ``gradual=True`` the stages are unfrozen one per epoch from the top down (the head and
    the highest stage first), as in ULMFiT. ``bn_eval`` is passed to
    :func:`tlutils.train.train_epoch`: ``"all"`` keeps every BatchNorm layer's statistics fixed.
    With a ``val_loader``, ``keep_best`` restores the weights of the best epoch by ``monitor``
    (``"val_loss"`` or ``"val_acc"``), and ``patience`` stops after that many epochs without
    improvement. ``on_epoch_end(epoch, model)`` is called after every epoch (e.g. to probe the features).
    """
    if monitor not in ("val_loss", "val_acc"):
        raise ValueError(f"monitor must be 'val_loss' or 'val_acc', got {monitor!r}.")
    all_stages = [name for name, _ in stages(model)]
    wanted = list(all_stages) if unfreeze_stages is None else list(unfreeze_stages)
    unknown = [s for s in wanted if s not in all_stages]
    if unknown:
        raise ValueError(f"Unknown stage(s) {unknown}; this model's stages are {all_stages}.")
    if "head" not in wanted:
        wanted.append("head")
    prefixes = dict(stages(model))
    freeze(model)
    order = [s for s in reversed(all_stages) if s in wanted]  # head first, then down the body
    schedule = [[s] for s in order] if gradual else [order]
    if gradual and len(schedule) > 1:  # head and the highest body stage go together in the first epoch
        schedule = [schedule[0] + schedule[1], *schedule[2:]]
    for name in schedule[0]:
        unfreeze(model, prefixes[name])
    opt = make_optimizer(param_groups(model, lr, decay, weight_decay), optimizer, lr, weight_decay=weight_decay)
    return _train(
        model,
        train_loader,
        val_loader,
        epochs,
        opt,
        device,
        bn_eval,
        patience,
        keep_best,
        monitor,
        schedule,
        prefixes,
        on_epoch_end,
    )


def _train(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str | None,
    bn_eval: str = "frozen",
    patience: int | None = None,
    keep_best: bool = False,
    monitor: str = "val_loss",
    schedule: list[list[str]] | None = None,
    prefixes: dict[str, list[str]] | None = None,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
) -> FineTuneHistory:
    """The epoch loop shared by both phases: unfreeze on schedule, train, evaluate, keep the best, stop early."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be at least 1 (or None), got {patience}.")
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    history = FineTuneHistory(phase_starts=[0])
    best_score, best_state, since_best = -math.inf, None, 0
    for epoch in range(epochs):
        if schedule and 0 < epoch < len(schedule):
            for name in schedule[epoch]:
                unfreeze(model, prefixes[name])
        start = time.perf_counter()
        loss, acc = train_epoch(model, train_loader, optimizer, device=device, bn_eval=bn_eval)
        history.train_loss.append(loss)
        history.train_acc.append(acc)
        if val_loader is not None:
            val_loss, val_acc = evaluate(model, val_loader, device=device)
            history.val_loss.append(val_loss)
            history.val_acc.append(val_acc)
            score = -val_loss if monitor == "val_loss" else val_acc
            if score > best_score:
                best_score, since_best, history.best_epoch = score, 0, epoch
                if keep_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
        history.seconds.append(time.perf_counter() - start)
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
        if patience is not None and since_best >= patience:
            history.stopped_early = True
            break
    if keep_best and best_state is not None:
        model.load_state_dict(best_state)
    return history


def warmup_then_finetune(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    warmup_epochs: int = 3,
    finetune_epochs: int = 5,
    warmup_lr: float = 1e-3,
    finetune_lr: float = 1e-4,
    warmup_optimizer: str = "adam",
    **fine_tune_kwargs,
) -> FineTuneHistory:
    """The whole recipe: :func:`warm_up_head`, then :func:`fine_tune`; one joined history (chapter 4).

    Extra keyword arguments go to :func:`fine_tune` (``decay``, ``unfreeze_stages``, ``gradual``,
    ``bn_eval``, ``patience``, ...). ``best_epoch`` counts from the first warm-up epoch.
    """
    device = fine_tune_kwargs.pop("device", None)
    history = warm_up_head(model, train_loader, val_loader, warmup_epochs, warmup_lr, warmup_optimizer, device=device)
    return history.extend(
        fine_tune(model, train_loader, val_loader, finetune_epochs, finetune_lr, device=device, **fine_tune_kwargs)
    )


def split_at_stage(model: nn.Module, stage: int) -> tuple[nn.Module, nn.Module]:
    """Cut a timm EfficientNet-style model before ``blocks[stage]`` into ``(bottom, top)`` (chapter 4).

    ``bottom`` (stem and ``blocks[:stage]``) shares the model's weights, is frozen and in eval
    mode: its outputs can be computed once and cached. ``top`` is a copy of the model whose
    stem and lower blocks are ``nn.Identity``, so ``top(bottom(x)) == model(x)`` in eval mode, it
    takes the cached tensors as input, and its parameters keep the original names
    (``blocks.6.0.conv_pw.weight``), so ``model.load_state_dict(top.state_dict(), strict=False)``
    copies the trained top back.
    """
    if not all(hasattr(model, n) for n in ("conv_stem", "bn1", "blocks")):
        raise TypeError(f"split_at_stage needs a timm EfficientNet/MobileNet-style model, got {type(model).__name__}.")
    if not 0 < stage < len(model.blocks):
        raise ValueError(f"stage must be between 1 and {len(model.blocks) - 1}, got {stage}.")
    bottom = nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:stage])
    freeze(bottom)
    bottom.eval()
    top = copy.deepcopy(model)
    top.conv_stem, top.bn1 = nn.Identity(), nn.Identity()
    for i in range(stage):
        top.blocks[i] = nn.Identity()
    return bottom, top


def linear_probe_accuracy(
    train_features: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray,
    val_features: torch.Tensor | np.ndarray,
    val_labels: torch.Tensor | np.ndarray,
    C: float = 1.0,
) -> float:
    """Validation accuracy of a logistic regression on fixed features: how linearly separable they are (chapters 3, 4).

    Features are standardised with the training set's mean and spread first.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    xtr, ytr, xva, yva = map(as_numpy, (train_features, train_labels, val_features, val_labels))
    if len(xtr) != len(ytr) or len(xva) != len(yva):
        raise ValueError("Features and labels must have the same length.")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    probe.fit(xtr.reshape(len(xtr), -1), ytr)
    return float(probe.score(xva.reshape(len(xva), -1), yva))
