"""Your own project: train on your image folder with the course's recipe (chapter 5).

:func:`train_folder` starts from what :func:`tlutils.diagnose` measured (passed as a value,
or measured here): the split, the features of every stage and the stage chosen on the
training images. What it trains follows the diagnosis's case:

* **cases 1 and 2**: the probe itself, as a network: the final stage's probe as the head
  of the whole network (``linear_probe``), or the body cut after the chosen stage with
  that stage's probe (``cut_probe``); no training beyond the probe;
* **cases 3 and 4** (``fine_tune``): chapter 3's reference measured whole-body fine-tuning
  from the probe better than the linear probe and not worse than the cut probe (on the
  flowers). So the candidates are the whole body from
  the final stage's probe and, when a middle stage was chosen, the cut body from that
  stage's probe; each is fine-tuned with the course's one recipe
  (:data:`tlutils.recipe.REFERENCE`) at learning rates chosen on held-out training images
  (:func:`tlutils.rates.choose_lr`: two thirds train, one third scores), with an
  augmentation checked on those images first (a flip or a crop that changes what the
  probe sees is left out). A trial whose held-out accuracy falls clearly below the
  probe's after an epoch in its second half stops there (not after the first: that dip
  recovers, :data:`STOP_FROM`). The best candidate at its rate is then trained on every
  training image, unless no trial beat its probe on the held-out images (then the probe
  is kept, without spending more).

At the end the trained model is compared with the diagnosis's probe on the validation
images by the course's verdict rule (:func:`tlutils.verdict.compare`), read as
non-inferiority: a fine-tune is saved only if it is at least as good as the probe (within
a point); otherwise the probe is saved, and the report says so. Both that gate and the
stage choice looked at the validation images' labels only through this one check; a
held-out test folder (part 5's new photos) is the independent check.
"""

from __future__ import annotations

import copy
import functools
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import classification_report
from torch import nn
from torch.utils.data import Subset

from .calibration import TEMPERATURE_BOUNDS, fit_temperature
from .checkpoint import TrainedModel, trained_model
from .data import create_loader, create_transform, stratified_split, targets_of
from .diagnosis import Diagnosis, diagnose
from .features import stage_features
from .models import DEFAULT_MODEL, data_config, replace_head
from .probe import fit_probe, probe_as_linear, probe_head
from .rates import LRChoice, choose_lr
from .recipe import REFERENCE, Recipe, run
from .rule import TRAIN_STRATEGIES
from .stages import NUM_STAGES, STAGE_NAMES, CutModel
from .train import History, get_device, predict, seed_everything
from .verdict import Verdict, compare

__all__ = [
    "TRAIN_STRATEGIES",
    "LR_GRID",
    "class_weights",
    "train_folder",
    "trial_curves",
]

LR_GRID = (1e-4, 3e-4)
"""The learning rates tried first, widened by one step while the best is at an edge:
chapter 3's reference chose 1e-4 and 3e-4 for the whole body and the top stages."""
CALIBRATION_MIN_IMAGES = 50
"""Fewest validation images on which ``train`` fits a temperature: on 18 images a fitted
temperature raised the loss on other images (``scripts/benchmark_data_issues.py``)."""
HELD_OUT = 1 / 3
"""The share of the training images that scores the trials (never the validation ones)."""
STOP_FROM = 1 / 2
"""A trial stops early only after an epoch past this share of its epochs: right after the
learning-rate warm-up the whole body dips below its probe and then recovers (EuroSAT, 300
tiles per class at 128 px, rates 1e-4 and 3e-4: 0.870 and 0.811 after epoch 1, 0.921 and
0.924 after epoch 3, against the probe's 0.901; ``benchmark_train.py --trial-curves``)."""


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


def _probe_network(model: nn.Module, stage: int, head: nn.Linear) -> nn.Module:
    """The probe of ``stage`` as one network: the whole model with it as its head (the
    final stage), or the body cut after ``stage`` with it (:class:`CutModel`)."""
    if stage == NUM_STAGES - 1:
        return replace_head(copy.deepcopy(model), head.out_features, head=head)
    return CutModel(model, stage, head.out_features, head=head)


@torch.no_grad()
def _correct(net: nn.Module, dataset, device, batch_size: int = 64) -> np.ndarray:
    """Which images of ``dataset`` the network gets right, in order."""
    loader = create_loader(dataset, batch_size=batch_size)
    logits, targets = predict(net, loader, device)
    return (logits.argmax(1) == targets).numpy()


def _held_out_features(d: Diagnosis, rows, transform, stage: int, device):
    """Stage ``stage``'s features of the training images ``rows`` under ``transform``
    (not cached: the transform is one of a kind)."""
    images = _with_transform(Subset(d.data.train, list(rows)), transform)
    feats, _ = stage_features(
        d.model, images, [stage], device=device, progress=False, cache=False
    )
    return feats[stage].numpy()


def _choose_augment(d: Diagnosis, fit, held, device) -> tuple[str, str]:
    """The recipe's augmentation, measured (chapter 5): the chosen stage's probe, fitted
    on the ``fit`` rows, scores the ``held`` rows as they are and flipped (then cropped
    to half their area); a transform after which the probe is worse by the verdict rule
    changes what the images show, and is left out. Returns the augmentation and why."""
    from torchvision import transforms as t

    stage, y = d.best_stage, d.features.train_labels
    x = d.features.train[stage].numpy()
    probe = fit_probe(x[fit], y[fit], C=d.choice.Cs[stage])
    plain = probe.predict(x[held]) == y[held]
    size = d.image_size
    base = create_transform(data_config(d.model), image_size=size)
    found = {}
    for name, step in [
        ("flip", t.RandomHorizontalFlip(p=1.0)),
        ("crop", t.CenterCrop(int(size * 0.5**0.5))),
    ]:
        changed = t.Compose(
            [*base.transforms[:2], step, t.Resize(size), *base.transforms[2:]]
        )
        feats = _held_out_features(d, held, changed, stage, device)
        found[name] = compare(probe.predict(feats) == y[held], plain)
    words = "; ".join(
        f"{n}: {v.sentence(n + 'ped', 'as they are')}" for n, v in found.items()
    )
    if found["crop"].b_better:
        return "none", f"crops and flips left out ({words})"
    if found["flip"].b_better:
        return "crop", f"flips left out ({words})"
    return "crop_flip", f"crops and flips keep what the probe sees ({words})"


class _Stop(Exception):
    """Raised in a trial whose held-out accuracy fell clearly below the probe's."""


@dataclass
class _Candidate:
    name: str
    stage: int


def _trial(
    d: Diagnosis,
    candidate: _Candidate,
    recipe: Recipe,
    fit,
    held,
    train_images,
    loss_fn,
    device,
    stop: bool = True,
) -> dict:
    """One fine-tune on the ``fit`` rows, scored on the ``held`` rows after every epoch;
    with ``stop``, stopped when the probe is better by the verdict rule after an epoch in
    the second half (:data:`STOP_FROM`). The row holds every epoch's held-out accuracy
    (``curve``) and the first epoch after which the probe was better
    (``below_probe_after``, ``None`` if never)."""
    stage, y = candidate.stage, d.features.train_labels
    x = d.features.train[stage]
    head = probe_head(x[fit], y[fit], C=d.choice.Cs[stage])
    probe_right = (head(x[held].float()).argmax(1).numpy()) == y[held]
    net = _probe_network(d.model, stage, head)
    plain_held = Subset(d.data.train, list(held))
    scores: list[np.ndarray] = []
    below: list[int] = []

    def score(epoch: int, model: nn.Module) -> None:
        scores.append(_correct(model, plain_held, device))
        if compare(scores[-1], probe_right).verdict == "B better":
            below.append(len(scores))
            if stop and len(scores) > STOP_FROM * recipe.epochs:
                raise _Stop

    start = time.perf_counter()
    stopped = False
    try:
        run(recipe.replace(head="keep"), net, Subset(train_images, list(fit)),
            on_epoch_end=score, loss_fn=loss_fn, device=device, progress=False,
            seed=d.seed)  # fmt: skip
    except _Stop:
        stopped = True
    return {
        "candidate": candidate.name,
        "stage": stage,
        "lr": recipe.lr,
        "held_out": float(scores[-1].mean()),
        "probe_held_out": float(probe_right.mean()),
        "epochs": len(scores),
        "stopped": stopped,
        "curve": [round(float(c.mean()), 4) for c in scores],
        "below_probe_after": below[0] if below else None,
        "seconds": round(time.perf_counter() - start, 1),
    }


def _candidates(d: Diagnosis) -> list[_Candidate]:
    """What cases 3 and 4 fine-tune: the whole body, and the body cut after the chosen
    stage when that is a middle one."""
    candidates = [_Candidate("whole body", NUM_STAGES - 1)]
    if d.best_stage != NUM_STAGES - 1:
        candidates.append(
            _Candidate(f"cut after {STAGE_NAMES[d.best_stage]}", d.best_stage)
        )
    return candidates


def _trial_setup(d: Diagnosis, recipe: Recipe, device):
    """The trials' split of the training images (``fit``, ``held``), the recipe with its
    measured augmentation, the training images under its transform, and why."""
    y = d.features.train_labels
    fit, held = (np.asarray(r) for r in stratified_split(y.tolist(), HELD_OUT, d.seed))
    augment, why = _choose_augment(d, fit, held, device)
    recipe = recipe.replace(augment=augment)
    config = data_config(d.model)
    images = _with_transform(d.data.train, recipe.train_transform(config, d.image_size))
    return fit, held, recipe, images, why


def trial_curves(
    d: Diagnosis,
    rates: Sequence[float] = LR_GRID,
    recipe: Recipe = REFERENCE,
    stages: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> list[dict]:
    """The candidates of :func:`train_folder`'s trials (those cut after ``stages``; by
    default all) at every rate in ``rates``, run to the end, not stopped (chapter 5):
    each row's ``curve`` and ``below_probe_after`` show whether the early stop would
    have ended a trial that later recovered (``benchmark_train.py --trial-curves``)."""
    device = torch.device(device) if device is not None else get_device()
    fit, held, recipe, images, _ = _trial_setup(d, recipe, device)
    loss = nn.functional.cross_entropy
    chosen = [c for c in _candidates(d) if stages is None or c.stage in stages]
    return [
        _trial(d, c, recipe.replace(lr=rate), fit, held, images, loss, device, False)
        for c in chosen
        for rate in rates
    ]


def _fine_tune(
    d: Diagnosis,
    recipe: Recipe,
    lr: float | None,
    lr_grid,
    loss_fn,
    device,
    progress: bool,
) -> tuple[nn.Module | None, History | None, dict]:
    """Cases 3 and 4: the trials, then the chosen candidate on every training image (or
    ``None`` if no trial beat its probe). Returns the network, its history and a record of
    what was tried and why."""
    y = d.features.train_labels
    fit, held, recipe, images, why = _trial_setup(d, recipe, device)
    candidates = _candidates(d)
    trials: list[dict] = []
    choices: dict[str, LRChoice] = {}
    for c in candidates:
        if lr is not None and len(candidates) == 1:
            choices[c.name] = LRChoice(lr, {}, False)
            continue

        def score(rate: float, c: _Candidate = c) -> float:
            row = _trial(
                d, c, recipe.replace(lr=rate), fit, held, images, loss_fn, device
            )
            trials.append(row)
            if progress:
                print(
                    f"  trial: {c.name}, lr {rate:g}: held-out {row['held_out']:.3f} "
                    f"(its probe {row['probe_held_out']:.3f}, {row['epochs']} epochs"
                    f"{', stopped' if row['stopped'] else ''}, {row['seconds']:.0f} s)"
                )
            return row["held_out"]

        grid = (lr,) if lr is not None else lr_grid
        choices[c.name] = choose_lr(score, grid, max_widen=0 if lr else 1)
    record = {"augment": recipe.augment, "augment_why": why, "trials": trials}
    best = max(candidates, key=lambda c: (_best_score(trials, c, choices), -c.stage))
    chosen = choices[best.name]
    record.update(candidate=best.name, stage=best.stage, lr=chosen.lr)
    beaten = [r for r in trials if r["candidate"] == best.name and r["lr"] == chosen.lr]
    if beaten and beaten[0]["held_out"] < beaten[0]["probe_held_out"]:
        record["skipped"] = (
            f"no trial beat its probe on the {len(held)} held-out training images (best: "
            f"{best.name} at lr {chosen.lr:g}, {beaten[0]['held_out']:.3f} against "
            f"{beaten[0]['probe_held_out']:.3f}): the probe is kept, nothing more trained"
        )
        return None, None, record
    x = d.features.train[best.stage]
    head = probe_head(x, y, C=d.choice.Cs[best.stage])
    net = _probe_network(d.model, best.stage, head)
    final = recipe.replace(lr=chosen.lr, head="keep")
    record["recipe"] = final.settings()
    history = run(final, net, images, d.data.val, loss_fn=loss_fn, device=device,
                  progress=progress, seed=d.seed, desc="fine-tuning")  # fmt: skip
    return net, history, record


def _best_score(trials, candidate, choices) -> float:
    rows = [r for r in trials if r["candidate"] == candidate.name]
    if not rows:
        return -1.0
    lr = choices[candidate.name].lr
    return max(r["held_out"] for r in rows if r["lr"] == lr)


def _verdict_words(v: Verdict) -> str:
    """The saved model against the probe, in words, with what to try if it is worse."""
    mine, probe = "the saved model", "the probe"
    if v.a_better:
        return f"better than the probe: {v.sentence(mine, probe)}."
    if v.not_worse:
        return f"at least as good as the probe: {v.not_worse_sentence(mine, probe)}."
    worse = "worse than" if v.b_better else "possibly worse than"
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
    for note in ("fine_tune_skipped", "fine_tune_not_kept"):
        if h.get(note):
            rows.append(h[note])
    return "\n".join(rows)


def _trials_table(record: dict) -> str:
    """What was tried on the held-out training images, one line each (chapter 5)."""
    if not record.get("trials"):
        return ""
    lines = [
        f"augmentation: {record['augment']} ({record['augment_why']})",
        "trials (fit on 2/3 of the training images, scored on the other third):",
        "  candidate              lr      held-out  its probe  epochs  seconds",
    ]
    for r in record["trials"]:
        stop = "  stopped: clearly below its probe" if r["stopped"] else ""
        lines.append(
            f"  {r['candidate']:<20}  {r['lr']:<6g}  {r['held_out']:>8.3f}  "
            f"{r['probe_held_out']:>9.3f}  {r['epochs']:>6}  {r['seconds']:>7.0f}{stop}"
        )
    if "lr" in record:
        lines.append(f"chosen: {record['candidate']} at lr {record['lr']:g}")
    return "\n".join(lines)


def _check_diagnosis(d: Diagnosis, folder, image_size: int, seed: int) -> None:
    same = Path(d.scan.root) == Path(folder).expanduser()
    if not same or d.image_size != image_size or d.seed != seed or d.features is None:
        raise ValueError(
            f"The diagnosis is of {d.scan.root} at {d.image_size} px with seed {d.seed}; "
            f"train_folder was asked for {folder} at {image_size} px with seed {seed}. "
            "Pass the diagnosis of this folder (tl.diagnose(folder, image_size, seed)) "
            "or none."
        )


def train_folder(
    folder: str | Path,
    strategy: str = "auto",
    image_size: int = 160,
    diagnosis: Diagnosis | None = None,
    epochs: int = REFERENCE.epochs,
    lr: float | None = None,
    class_weighted: bool = False,
    batch_size: int = REFERENCE.batch_size,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Train EfficientNet-Lite0 on your folder, starting from the diagnosis (chapter 5).

    ``diagnosis`` is what :func:`tlutils.diagnose` returned for this folder, size and
    seed (measured here if ``None``). ``strategy="auto"`` trains what it recommends;
    ``"linear_probe"`` and ``"cut_probe"`` return that probe as a network;
    ``"fine_tune"`` runs the recipe for ``epochs`` epochs (see the module's docstring),
    at ``lr`` if given, else at the rate chosen on held-out training images.
    ``class_weighted=True`` weighs the loss by inverse class frequency, for imbalanced
    folders. The per-epoch table, the trials, a per-class report on the validation
    images and the verdict against the diagnosis's probe are printed (unless
    ``progress=False``) and stored in the history (``"report"``, ``"verdict"``,
    ``"trials"``, ``"val_correct"``, ``"probe_val_correct"``; see
    :meth:`TrainedModel.against_probe`).
    """
    wanted = ("auto", *TRAIN_STRATEGIES)
    if strategy not in wanted:
        raise ValueError(f"strategy must be one of {wanted}, got {strategy!r}.")
    device = torch.device(device) if device is not None else get_device()
    d = diagnosis or diagnose(folder, image_size, seed, device, progress)
    _check_diagnosis(d, folder, image_size, seed)
    seed_everything(seed)
    strategy = d.train_strategy if strategy == "auto" else strategy
    f, best, n_classes = d.features, d.best_stage, len(d.classes)
    probe_correct = d.probe(best).predict(f.val[best].numpy()) == f.val_labels
    loss_fn = cpu_loss = nn.functional.cross_entropy
    if class_weighted:  # the probe's round and the fine-tune scored with the same loss
        weight = class_weights(targets_of(d.data.train), n_classes)
        loss_fn = functools.partial(cpu_loss, weight=weight.to(device))
        cpu_loss = functools.partial(cpu_loss, weight=weight)
    stage = NUM_STAGES - 1 if strategy == "linear_probe" else best
    head = probe_as_linear(d.probe(stage))
    history = _probe_round(head, f, stage, cpu_loss)
    net, record = _probe_network(d.model, stage, head), {}
    if strategy == "fine_tune":
        recipe = REFERENCE.replace(epochs=epochs, batch_size=batch_size)
        tuned, tuned_history, record = _fine_tune(
            d, recipe, lr, LR_GRID, loss_fn, device, progress
        )
        if tuned is not None:
            net, stage = tuned, record["stage"]
            history.extend(tuned_history)
            history.best_epoch = len(history.train_loss) - 1
    return _finish(
        d, net, stage, strategy, history, record, probe_correct, device, progress
    )


def _probe_round(head: nn.Linear, f, stage: int, loss_fn) -> History:
    """Round 0 of the epoch table: the probe's losses and accuracies, from the features."""
    history = History()
    with torch.no_grad():
        for part, x, y in [("train", f.train[stage], f.train_labels),
                           ("val", f.val[stage], f.val_labels)]:  # fmt: skip
            logits, target = head(x.float()), torch.as_tensor(y)
            getattr(history, f"{part}_loss").append(float(loss_fn(logits, target)))
            acc = float((logits.argmax(1) == target).float().mean())
            getattr(history, f"{part}_acc").append(acc)
    history.seconds.append(0.0)
    history.best_epoch = 0
    return history


def _finish(d, net, stage, strategy, history, record, probe_correct, device, progress):
    """The keep gate, the report and the :class:`TrainedModel` (chapter 5)."""
    val_correct = _correct(net, d.data.val, device)
    verdict = compare(val_correct, probe_correct)
    record["fine_tune_not_kept"] = ""
    if history.best_epoch and not verdict.not_worse:
        record["fine_tune_not_kept"] = (
            f"not kept: the fine-tuned model minus the probe is {verdict.interval()} on "
            f"{verdict.images} validation images, not shown to be at least as good "
            "(within a point): the probe is saved"
        )
        stage = d.best_stage
        net = _probe_network(d.model, stage, probe_as_linear(d.probe(stage)))
        history.best_epoch = 0
        val_correct = _correct(net, d.data.val, device)
        verdict = compare(val_correct, probe_correct)
    logits, targets = predict(net, create_loader(d.data.val, batch_size=64), device)
    temperature = 1.0  # on fewer validation images a fitted temperature may hurt
    if len(targets) >= CALIBRATION_MIN_IMAGES:
        with warnings.catch_warnings():  # a temperature on its bound: in the report
            warnings.simplefilter("ignore")
            temperature = fit_temperature(logits, targets)
    report = classification_report(
        targets, logits.argmax(1), labels=range(len(d.classes)),
        target_names=d.classes, zero_division=0,
    )  # fmt: skip
    trained = trained_model(
        net.cpu().eval(), d.classes, DEFAULT_MODEL, d.image_size, history
    )
    trained.temperature = temperature
    h = trained.history
    h.update(
        strategy=strategy,
        stage=int(stage),
        probe_stage=int(d.best_stage),
        phase_names=["probe", "fine-tune"]
        if len(history.phase_starts) > 1
        else ["probe"],
        report=report,
        val_correct=val_correct.astype(int).tolist(),
        probe_val_correct=probe_correct.astype(int).tolist(),
        verdict=_verdict_words(verdict),
        fine_tune_skipped=record.get("skipped", ""),
        fine_tune_not_kept=record["fine_tune_not_kept"],
        trials=record.get("trials", []),
        augment=record.get("augment", ""),
        recipe=record.get("recipe", {}),
        trials_table=_trials_table(record),
        diagnosis_seconds=round(d.seconds, 1),
        temperature=round(temperature, 4),
        calibration=(
            f"no temperature fitted: {len(targets)} validation images, fewer than "
            f"{CALIBRATION_MIN_IMAGES}"
            if len(targets) < CALIBRATION_MIN_IMAGES
            else f"temperature {temperature:.2f} fitted on the {len(targets)} validation "
            "images (the logits are divided by it before the softmax; "
            "`tlutils evaluate` shows on new images whether it helped)"
            + (
                "; it lies on the search bound: too few validation images to pin it"
                if not 1.001 * TEMPERATURE_BOUNDS[0]
                < temperature
                < 0.999 * TEMPERATURE_BOUNDS[1]
                else ""
            )
        ),
    )
    h["epochs_table"] = _epoch_table(h)
    if progress:
        for part in (h["trials_table"], h["epochs_table"], report):
            if part:
                print(part)
        print(
            f"saved model ({strategy}) on validation: {val_correct.mean():.3f}; the "
            f"probe of {STAGE_NAMES[d.best_stage]}: {probe_correct.mean():.3f}"
        )
        print(h["verdict"])
        print(h["calibration"])
    return trained
