"""Warm-up fine-tuning: a new head on a frozen body, then the body with small rates (chapter 4).

The recipe is two calls of :func:`tlutils.fit` with different parts frozen:

1. :func:`warm_up` freezes the body and trains only the new, randomly initialised head;
2. :func:`fine_tune` unfreezes the body (all of it, or the stages you name), gives every
   stage its own learning rate (:func:`param_groups`, discriminative learning rates),
   optionally unfreezes stage by stage (gradual unfreezing), keeps the best epoch and
   stops early. BatchNorm statistics stay fixed unless you ask otherwise.

:func:`warm_up_then_fine_tune` runs both and joins their histories. Stages are numbered
as everywhere in the course (:mod:`tlutils.stages`: 0 = stem ... 8 = head conv).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .models import freeze, unfreeze
from .stages import head_modules, stage_modules
from .train import BNStats, History, OptName, _check_choice, create_optimizer, fit

__all__ = ["param_groups", "warm_up", "fine_tune", "warm_up_then_fine_tune"]


def _named_stages(model: nn.Module) -> list[tuple[str, list[str]]]:
    """``[(name, module names)]`` from input to head; stages 0..N, then ``"head"``."""
    numbered = [(f"stage {i}", mods) for i, mods in enumerate(stage_modules(model))]
    return [*numbered, ("head", head_modules(model))]


def _params_of(model: nn.Module, modules: list[str]) -> list[nn.Parameter]:
    prefixes = tuple(m + "." for m in modules)
    return [
        p for n, p in model.named_parameters() if n in modules or n.startswith(prefixes)
    ]


def param_groups(
    model: nn.Module, lr: float, decay: float = 1.0, weight_decay: float = 0.0
) -> list[dict]:
    """Optimiser parameter groups, one per stage, with discriminative learning rates (chapter 4).

    The head gets ``lr``; each stage below gets ``decay`` times the rate of the stage
    above (Howard and Ruder 2018 use ``decay = 1 / 2.6``; ``decay=1`` gives every stage the
    same rate). Each group has a ``"name"`` (``"stage 7"``, ``"head"``). Frozen parameters
    are included: they get no gradient, so the optimiser skips them until they are
    unfrozen, which is what gradual unfreezing needs. Stages without parameters are left out.
    """
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}.")
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}.")
    groups, seen = [], set()
    for name, modules in reversed(_named_stages(model)):
        params = [p for p in _params_of(model, modules) if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:  # a stage without parameters (a ReLU, a pooling layer) gets no rate
            rate = lr * decay ** len(groups)
            groups.append(
                {
                    "params": params,
                    "lr": rate,
                    "weight_decay": weight_decay,
                    "name": name,
                }
            )
    missing = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise ValueError(f"Parameters outside every stage: {missing[:5]}.")
    return groups[::-1]


def warm_up(
    model: nn.Module,
    train_loader,
    val_loader=None,
    epochs: int = 3,
    lr: float = 1e-3,
    opt: OptName = "adam",
    **fit_kwargs,
) -> History:
    """Phase 1: freeze everything but the head and train the head alone (chapter 4).

    Further keyword arguments go to :func:`tlutils.fit`. Afterwards only the head is
    trainable; the body's BatchNorm layers kept their statistics (they are frozen).
    """
    freeze(model)
    unfreeze(model, head_modules(model))
    return fit(
        model, train_loader, val_loader, epochs=epochs, lr=lr, opt=opt, **fit_kwargs
    )


def fine_tune(
    model: nn.Module,
    train_loader,
    val_loader=None,
    epochs: int = 5,
    lr: float = 1e-4,
    decay: float = 1.0,
    stages: Sequence[int] | None = None,
    gradual: bool = False,
    opt: OptName = "adam",
    weight_decay: float = 0.0,
    bn_stats: BNStats = "fixed",
    keep_best: bool = True,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    **fit_kwargs,
) -> History:
    """Phase 2: unfreeze the body (or the given stages) and train with small rates (chapter 4).

    ``stages`` are the stage numbers to train (default: all); the head always trains.
    ``lr`` is the head's rate and ``decay`` < 1 gives lower stages lower rates
    (:func:`param_groups`). ``gradual=True`` unfreezes one stage per epoch from the top
    down (the head and the highest stage first), as in ULMFiT. BatchNorm statistics stay
    fixed (``bn_stats="fixed"``), as chapter 4 recommends. With a ``val_loader`` the best
    epoch's weights are restored (``keep_best``); further keyword arguments (``monitor``,
    ``patience``, ``device``, ``schedule="cosine"`` with ``warmup_steps``, ...) go to
    :func:`tlutils.fit`, whose schedule then runs on this function's optimiser.
    """
    _check_choice("bn_stats", bn_stats, BNStats)  # before anything is frozen or trained
    named = _named_stages(model)
    numbers = [i for i, (_, mods) in enumerate(named[:-1]) if _params_of(model, mods)]
    wanted = numbers if stages is None else list(stages)
    unknown = [s for s in wanted if s not in numbers]
    if unknown:
        raise ValueError(
            f"No trainable stage(s) {unknown}; this model has stages {numbers}."
        )
    order = [named[-1][1], *(named[s][1] for s in sorted(wanted, reverse=True))]
    schedule = [order[:2], *([m] for m in order[2:])] if gradual else [order]

    def unfreeze_next(epoch: int, net: nn.Module) -> None:
        if epoch + 1 < len(schedule):
            unfreeze(net, [m for mods in schedule[epoch + 1] for m in mods])
        if on_epoch_end is not None:
            on_epoch_end(epoch, net)

    freeze(model)
    unfreeze(model, [m for mods in schedule[0] for m in mods])
    groups = param_groups(model, lr, decay, weight_decay)
    optimizer = create_optimizer(groups, opt, lr, weight_decay=weight_decay)
    return fit(
        model,
        train_loader,
        val_loader,
        epochs=epochs,
        optimizer=optimizer,
        bn_stats=bn_stats,
        keep_best=keep_best and val_loader is not None,
        on_epoch_end=unfreeze_next,
        **fit_kwargs,
    )


def warm_up_then_fine_tune(
    model: nn.Module,
    train_loader,
    val_loader=None,
    warm_up_epochs: int = 3,
    fine_tune_epochs: int = 5,
    warm_up_lr: float = 1e-3,
    lr: float = 1e-4,
    *,
    loss_fn: Callable = nn.functional.cross_entropy,
    bn_stats: BNStats = "fixed",
    mixed_precision: bool = True,
    device: torch.device | str | None = None,
    progress: bool = True,
    **fine_tune_kwargs,
) -> History:
    """The whole recipe: :func:`warm_up`, then :func:`fine_tune`; one joined history (chapter 4).

    ``loss_fn``, ``bn_stats``, ``mixed_precision``, ``device`` and ``progress`` reach both
    phases. ``bn_stats`` changes nothing in the warm-up unless it is ``"update_all"``
    (the frozen body's statistics then update in both phases). Further keyword arguments
    go to :func:`fine_tune` (``decay``, ``stages``, ``gradual``, ``opt``, ``patience``,
    ...). ``best_epoch`` counts from the first warm-up epoch.
    """
    _check_choice("bn_stats", bn_stats, BNStats)  # fail before the warm-up, not after
    shared = {
        "loss_fn": loss_fn,
        "bn_stats": bn_stats,
        "mixed_precision": mixed_precision,
        "device": device,
        "progress": progress,
    }
    history = warm_up(
        model, train_loader, val_loader, warm_up_epochs, warm_up_lr, **shared
    )
    phase2 = fine_tune(
        model,
        train_loader,
        val_loader,
        fine_tune_epochs,
        lr,
        **shared,
        **fine_tune_kwargs,
    )
    return history.extend(phase2)
