"""Your own project: train on your image folder with the recipe, predict on new images (chapter 5).

:func:`train_folder` is chapter 4's recipe on a folder of your images (flat or already
split into ``train/`` and ``val/``), started from what :func:`tlutils.diagnose` measured:

1. **Phase 1 is the probe.** The pooled features of every stage are read from the feature
   cache that ``diagnose`` filled (one pass of the frozen body if it is empty), the stage
   is chosen on the training images as ``diagnose`` chooses it, and the logistic
   regression (its penalty chosen on the training images) becomes the head: converged
   whatever the folder's size, at the cost of one feature pass.
2. **Phase 2** (``strategy="fine_tune"``) fine-tunes, from the chosen stage's probe, the
   network it sits on (linear probing, then fine-tuning): the whole network, or the body cut
   after the chosen stage, with BatchNorm statistics fixed, for a budget counted in
   optimiser steps as well as epochs (small folders get rounds of at least
   :data:`ROUND_STEPS` steps, and at least ``min_steps`` in all), with early stopping on
   the validation loss. The round with the lowest validation loss is kept, the probe
   included, and only if the verdict rule finds it at least as good as the probe (within
   a point) on the validation images: the saved model keeps the diagnosis's promise.

At the end the saved model's per-image validation correctness is compared with the
diagnosis's probe by the course's verdict rule (:func:`tlutils.verdict.compare`).
:func:`predict_images` gives the top classes of new images with a trained model, and
:func:`evaluate_folder` scores a trained model on a labelled folder.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import classification_report
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Subset

from . import finetune
from .checkpoint import CutModel, TrainedModel, trained_model
from .data import (
    _seed_worker,
    create_loader,
    create_transform,
    default_num_workers,
    load_image_folder,
    targets_of,
)
from .diagnosis import choose_stage
from .features import fit_probe, probe_as_linear, stage_features
from .models import DEFAULT_MODEL, create_model, data_config, replace_head
from .stages import NUM_STAGES, STAGE_NAMES
from .train import History, get_device, predict, seed_everything
from .verdict import Verdict, compare

__all__ = [
    "TRAIN_STRATEGIES",
    "train_folder",
]

TRAIN_STRATEGIES = ("linear_probe", "cut_probe", "fine_tune")
"""What :func:`train_folder` trains: the final stage's probe as the head of the whole
network; the body cut after the chosen stage with its probe; or the probe, then the whole
network fine-tuned from it."""
ROUND_STEPS = 10
"""Fewest optimiser steps between two validations while fine-tuning: a folder smaller
than this many batches is fine-tuned in rounds of this many steps instead of epochs."""
MIN_STEPS = 50
"""Fewest optimiser steps of the fine-tuning phase by default, however small the folder."""


def class_weights(targets: list[int], num_classes: int) -> torch.Tensor:
    """Loss weights inversely proportional to each class's share of the training set (chapter 5)."""
    counts = Counter(targets)
    total = len(targets)
    return torch.tensor(
        [total / (num_classes * counts[c]) for c in range(num_classes)],
        dtype=torch.float32,
    )


def _with_transform(dataset, transform):
    """The same images (same split) with another transform."""
    if isinstance(dataset, Subset):
        return Subset(_with_transform(dataset.dataset, transform), dataset.indices)
    dataset = copy.copy(dataset)
    dataset.transform = transform
    return dataset


@torch.no_grad()
def _head_scores(head: nn.Module, x: torch.Tensor, y: np.ndarray, loss_fn):
    logits = head(x.float())
    target = torch.as_tensor(y)
    return (
        float(loss_fn(logits, target)),
        float((logits.argmax(1) == target).float().mean()),
    )


def _rounds(n_train: int, batch_size: int, epochs: int, min_steps: int):
    """``(images per round, rounds)``: an epoch per round, or :data:`ROUND_STEPS` steps
    when the folder has fewer batches; at least ``epochs`` rounds and ``min_steps``."""
    per_epoch = max(1, math.ceil(n_train / batch_size))
    steps = max(per_epoch, ROUND_STEPS)
    rounds = max(epochs, math.ceil(min_steps / steps))
    return (n_train if steps == per_epoch else steps * batch_size), rounds


def _verdict_words(v: Verdict) -> str:
    """The saved model against the probe, in words, with what to try if it is worse."""
    if v.verdict == "A better":
        return f"better than the probe: {v.sentence('the saved model', 'the probe')}."
    if v.verdict == "equivalent":
        return f"as good as the probe: {v.sentence('the saved model', 'the probe')}."
    if v.not_worse:
        return (
            "as good as the probe within a point, perhaps better (the saved model minus "
            f"the probe is {v.interval()} on {v.images} validation images)."
        )
    worse = "worse than" if v.verdict == "B better" else "possibly worse than"
    return (
        f"WARNING: {worse} the probe: the saved model minus the probe is "
        f"{v.interval()} on {v.images} validation images. Try strategy "
        "'linear_probe' or 'cut_probe' (the probe itself), a smaller --lr, or more "
        "images per class; check the diagnosis for duplicates and mislabelled files."
    )


def _epoch_table(h: dict) -> str:
    """The per-epoch record as a plain table, the kept epoch marked (chapter 5)."""
    phases = h.get("phase_names", [])
    starts = h.get("phase_starts", [0])
    rows = ["epoch  phase         train loss  train acc  val loss  val acc  seconds"]
    for e in range(len(h["train_loss"])):
        phase = phases[sum(e >= s for s in starts) - 1] if phases else ""
        mark = "  <- kept" if e == h.get("best_epoch") else ""
        rows.append(
            f"{e:>5}  {phase:<12}  {h['train_loss'][e]:>10.3f}  "
            f"{h['train_acc'][e]:>9.3f}  {h['val_loss'][e]:>8.3f}  "
            f"{h['val_acc'][e]:>7.3f}  {h['seconds'][e]:>7.1f}{mark}"
        )
    if h.get("stopped_early"):
        rows.append("training stopped early: the validation loss stopped improving")
    if h.get("fine_tune_not_kept"):
        rows.append(h["fine_tune_not_kept"])
    return "\n".join(rows)


def train_folder(
    folder: str | Path,
    strategy: str = "fine_tune",
    image_size: int = 160,
    fine_tune_epochs: int = 3,
    min_steps: int = MIN_STEPS,
    lr: float = 1e-4,
    patience: int | None = 2,
    class_weighted: bool = False,
    batch_size: int = 32,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Train EfficientNet-Lite0 on your folder, starting from the diagnosis's probe (chapter 5).

    ``strategy="linear_probe"`` returns the whole network with the final stage's probe as
    its head; ``"cut_probe"`` the body cut after the stage chosen on the training images,
    pooled, with that stage's probe (:class:`tlutils.CutModel`); ``"fine_tune"`` starts
    from the chosen stage's probe and fine-tunes the network under it (whole or cut) at
    ``lr`` with BatchNorm statistics fixed for ``fine_tune_epochs`` rounds and at least
    ``min_steps`` optimiser steps (see the module's docstring), stopping after
    ``patience`` rounds without improvement and keeping the round with the lowest
    validation loss (the probe counts as round 0) if the verdict rule finds it at least as
    good as the probe; otherwise the probe (``"fine_tune_not_kept"`` says why).
    ``class_weighted=True`` weighs the fine-tuning loss by inverse class frequency, for
    imbalanced folders. At the end the per-epoch table, a per-class report on the
    validation images and the verdict against the diagnosis's probe are printed (unless
    ``progress=False``) and stored in the history (``"report"``, ``"verdict"``,
    ``"val_correct"``, ``"probe_val_correct"``; :meth:`TrainedModel.against_probe`).
    """
    if strategy not in TRAIN_STRATEGIES:
        raise ValueError(
            f"strategy must be one of {TRAIN_STRATEGIES}, got {strategy!r}."
        )
    seed_everything(seed)
    device = torch.device(device) if device is not None else get_device()
    model = create_model(DEFAULT_MODEL).eval()
    config = data_config(model)
    eval_tf = create_transform(config, image_size=image_size)
    data = load_image_folder(folder, eval_tf, eval_tf, seed=seed)
    n_classes = len(data.classes)
    start = time.perf_counter()
    # Phase 1: the probe, on the features diagnose cached (the same split and transform).
    kw = {"device": device, "progress": progress}
    train_f, ytr = stage_features(model, data.train, **kw)
    val_f, yva = stage_features(model, data.val, **kw)
    ytr, yva = ytr.numpy(), yva.numpy()
    best, _, Cs = choose_stage(train_f, ytr, seed)
    probes = {best: fit_probe(train_f[best].numpy(), ytr, C=Cs[best])}
    stage = NUM_STAGES - 1 if strategy == "linear_probe" else best
    if stage not in probes:
        probes[stage] = fit_probe(train_f[stage].numpy(), ytr, C=Cs[stage])
    probe_correct = probes[best].predict(val_f[best].numpy()) == yva
    head = probe_as_linear(probes[stage])
    loss_fn = nn.functional.cross_entropy
    if class_weighted:
        weight = class_weights(targets_of(data.train), n_classes).to(device)
        loss_fn = functools.partial(nn.functional.cross_entropy, weight=weight)
    cpu_loss = functools.partial(loss_fn, weight=None) if class_weighted else loss_fn
    history = History()
    for part, (x, y) in (
        ("train", (train_f[stage], ytr)),
        ("val", (val_f[stage], yva)),
    ):
        loss, acc = _head_scores(head, x, y, cpu_loss)
        getattr(history, f"{part}_loss").append(loss)
        getattr(history, f"{part}_acc").append(acc)
    history.seconds.append(time.perf_counter() - start)
    history.best_epoch = 0
    phase_names = ["probe"]
    if strategy == "cut_probe" or stage != NUM_STAGES - 1:
        net = CutModel(model, stage, n_classes, head=head)
    else:
        net = replace_head(model, n_classes, head=head)
    val = create_loader(data.val, batch_size=64)
    if strategy == "fine_tune":
        probe_state = copy.deepcopy(net.state_dict())
        train_set = _with_transform(
            data.train, create_transform(config, train=True, image_size=image_size)
        )
        per_round, rounds = _rounds(
            len(train_set), batch_size, fine_tune_epochs, min_steps
        )
        generator = torch.Generator().manual_seed(seed)
        sampler = RandomSampler(train_set, num_samples=per_round, generator=generator)
        train = DataLoader(
            train_set, batch_size=batch_size, sampler=sampler,
            num_workers=default_num_workers(), worker_init_fn=_seed_worker,
            pin_memory=torch.cuda.is_available(),
        )  # fmt: skip
        phase2 = finetune.fine_tune(
            net, train, val, epochs=rounds, lr=lr, bn_stats="fixed", keep_best=True,
            patience=patience, loss_fn=loss_fn, device=device, progress=progress,
            desc="fine-tuning rounds",
        )  # fmt: skip
        probe_loss = history.val_loss[0]
        history.extend(phase2)
        phase_names.append("fine-tune")
        if min(phase2.val_loss) < probe_loss:
            history.best_epoch = 1 + int(np.argmin(phase2.val_loss))
        else:  # the fine-tune never beat the probe's validation loss: keep the probe
            net.load_state_dict(probe_state)
            history.best_epoch = 0
    kept_note = ""
    logits, targets = predict(net.to(device).eval(), val, device)
    val_correct = (logits.argmax(1) == targets).numpy()
    verdict = compare(val_correct, probe_correct)
    if history.best_epoch > 0 and not verdict.not_worse:
        # The promise: a fine-tune that the rule cannot show to be at least as good as
        # the probe (within a point) on the validation images is not saved.
        kept_note = (
            f"not kept: the fine-tuned round {history.best_epoch} minus the probe is "
            f"{verdict.interval()} on {verdict.images} validation images, not shown to "
            "be at least as good (within a point): the probe is saved"
        )
        net.load_state_dict(probe_state)
        history.best_epoch = 0
        logits, targets = predict(net.to(device).eval(), val, device)
        val_correct = (logits.argmax(1) == targets).numpy()
        verdict = compare(val_correct, probe_correct)
    report = classification_report(
        targets, logits.argmax(1), labels=range(n_classes),
        target_names=data.classes, zero_division=0,
    )  # fmt: skip
    trained = trained_model(net.cpu(), data.classes, DEFAULT_MODEL, image_size, history)
    h = trained.history
    h.update(
        strategy=strategy,
        stage=int(stage),
        probe_stage=int(best),
        phase_names=phase_names,
        report=report,
        val_correct=val_correct.astype(int).tolist(),
        probe_val_correct=probe_correct.astype(int).tolist(),
        verdict=_verdict_words(verdict),
        fine_tune_not_kept=kept_note,
    )
    h["epochs_table"] = _epoch_table(h)
    if progress:
        print(h["epochs_table"])
        print(report)
        print(
            f"saved model ({strategy}) on validation: {val_correct.mean():.3f}; the "
            f"probe of {STAGE_NAMES[best]}: {probe_correct.mean():.3f}"
        )
        print(h["verdict"])
    trained.model.eval()
    return trained
