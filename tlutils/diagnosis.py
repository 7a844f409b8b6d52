"""Diagnose your own image folder before training: measure which case it is in (chapter 5).

:func:`diagnose` scans a folder (classes, counts, unreadable files, image modes, tiny
images, duplicate files), extracts the pooled features of every stage of the pretrained
EfficientNet-Lite0 once (cached), fits a linear probe per stage, and measures how
ImageNet-like the images are: is the final stage the best one, or a middle one (judged
by the course's verdict rule, :func:`tlutils.verdict.compare`, on the out-of-fold
correctness of the two stages' probes)? How sure, and how consistent within a class, is
the ImageNet head? From these measurements it recommends a case and a strategy, with the
probe's validation accuracy and an estimate of the seconds one epoch of fine-tuning takes
on this machine. With the same features it looks for problems in the data
(:mod:`tlutils.data_issues`): images whose given label the out-of-fold probe contradicts
most confidently (confident learning), and exact or near duplicates within a class, across
classes and across the train/validation split.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from sklearn.metrics import balanced_accuracy_score, recall_score

from . import smoke
from .cache import atomic_write_text
from .data import (
    DatasetSplits,
    create_transform,
    image_files,
    is_image_file,
    is_split_folder,
    load_image_folder,
    targets_of,
)
from .data_issues import DataIssues, dataset_files, find_data_issues
from .datasets import cache_dir
from .features import stage_features
from .models import create_model, data_config, imagenet_classes, replace_head
from .probe import StageChoice, choose_stage, fit_probe
from .rule import Recommendation, recommend_case
from .stages import NUM_STAGES, STAGE_NAMES
from .train import amp_dtype, get_device, step_seconds
from .verdict import Verdict, compare

__all__ = ["FolderScan", "scan_folder", "FolderFeatures", "Diagnosis", "diagnose"]

SMALL_SIDE = 64
"""Images whose shorter side has fewer pixels than this are reported as very small."""


@dataclass
class FolderScan:
    """What is in an image folder, read without a model (chapter 5)."""

    root: str
    layout: str  # "flat" or "split"
    classes: list[str]
    counts: dict[str, dict[str, int]]  # {"train"/"val"/"all": {class: images}}
    unreadable: list[str] = field(default_factory=list)
    ignored: int = 0  # files that are not images
    modes: dict[str, int] = field(default_factory=dict)  # PIL mode -> images
    small: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)  # same bytes
    across_splits: list[list[str]] = field(default_factory=list)  # in train and val
    nested: dict[str, int] = field(default_factory=dict)  # sub-folder -> images in it

    @property
    def imbalance(self) -> float:
        """Largest over smallest class count (1.0 = balanced)."""
        totals = Counter()
        for part in self.counts.values():
            totals.update(part)
        return max(totals.values()) / max(1, min(totals.values()))


def _inspect(path: Path) -> tuple[str, tuple[int, int]] | None:
    """The mode and size of a fully decodable image, or None."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.mode, img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def scan_folder(folder: str | Path) -> FolderScan:
    """Read every file of a flat or pre-split class folder once, without a model (chapter 5).

    Images in sub-folders of a class folder belong to that class (as in torchvision's
    ``ImageFolder``, which training uses): they are counted, and the sub-folders are
    named in :attr:`FolderScan.nested` so that a folder put there by mistake is seen.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist. Check the path.")
    parts = ["train", "val"] if is_split_folder(root) else [""]
    counts: dict[str, dict[str, int]] = {}
    modes, hashes = Counter(), defaultdict(list)
    unreadable, small, ignored, nested = [], [], 0, Counter()
    for part in parts:
        base = root / part if part else root
        classes = sorted(d.name for d in base.iterdir() if d.is_dir())
        counts[part or "all"] = {}
        for name in classes:
            n = 0
            everything = [p for p in (base / name).rglob("*") if p.is_file()]
            ignored += sum(not is_image_file(p.name) for p in everything)
            for file in image_files(base / name):
                if n == smoke.cap():  # the FULL smoke test: the files training keeps
                    break
                seen = _inspect(file)
                if seen is None:
                    unreadable.append(str(file))
                    continue
                n += 1
                if file.parent != base / name:
                    nested[str(file.parent)] += 1
                modes[seen[0]] += 1
                if min(seen[1]) < SMALL_SIDE:
                    small.append(str(file))
                hashes[hashlib.sha256(file.read_bytes()).hexdigest()].append(file)
            counts[part or "all"][name] = n
    groups = [[str(f) for f in g] for g in hashes.values() if len(g) > 1]
    across = [
        g for g in groups if len({Path(f).relative_to(root).parts[0] for f in g}) > 1
    ]
    across = across if parts != [""] else []
    all_classes = sorted({c for part in counts.values() for c in part})
    return FolderScan(
        str(root), "split" if parts != [""] else "flat", all_classes, counts,
        unreadable, ignored, dict(modes), small, groups, across, dict(nested),
    )  # fmt: skip


@dataclass
class FolderFeatures:
    """The pooled features of every stage of the pretrained body for a folder's training
    and validation images, with their labels (chapter 5): what ``diagnose`` measured
    and ``train_folder`` starts from."""

    train: dict[int, torch.Tensor]
    train_labels: np.ndarray
    val: dict[int, torch.Tensor]
    val_labels: np.ndarray


@dataclass
class Diagnosis:
    """Measurements of a folder and the recommendation made from them (chapter 5).

    Besides the numbers of the report, it carries what was measured, so that
    :func:`tlutils.train_folder` starts from it instead of measuring again: the split
    (``data``), the features (``features``), the stage choice (``choice``: each stage's
    out-of-fold correctness and penalty ``C``) and the pretrained model.
    """

    scan: FolderScan
    image_size: int
    stage_accuracy: list[float]  # probe per stage, out of fold on the training part
    stage_verdict: Verdict  # best stage against the final one (verdict rule)
    best_stage: int
    val_accuracy: float  # the best stage's probe, trained on train, scored on val
    val_balanced_accuracy: float
    per_class_recall: dict[str, float]
    imagenet_confidence: float  # mean max probability of the ImageNet head
    imagenet_consistency: float  # mean share of a class's most common ImageNet top-1
    imagenet_top: dict[str, str]  # each class's most common ImageNet top-1
    similar: bool
    evidence: str
    recommendation: Recommendation
    train_strategy: str  # what `tlutils train` will run: the case's strategy, except
    # that a probe recommended for case 1 is the chosen stage's (cut_probe) when that
    # stage is not the final one, so that the trained model is the probe measured here
    seconds_per_epoch: float  # estimated fine-tuning time of one epoch here
    device: str
    seed: int = 0
    classes: list[str] = field(default_factory=list)
    data: DatasetSplits | None = field(default=None, repr=False)
    features: FolderFeatures | None = field(default=None, repr=False)
    choice: StageChoice | None = field(default=None, repr=False)
    model: torch.nn.Module | None = field(default=None, repr=False)
    seconds: float = 0.0  # how long the diagnosis took
    issues: DataIssues | None = None  # suspected label errors and near duplicates

    def probe(self, stage: int | None = None):
        """The fitted probe of ``stage`` (default: the chosen one) on the training
        features, with the penalty chosen for it (chapter 5)."""
        stage = self.best_stage if stage is None else stage
        train = self.features.train[stage]
        return fit_probe(train, self.features.train_labels, C=self.choice.Cs[stage])

    def report(self) -> str:
        """A short markdown report of the measurements and the recommendation (chapter 5)."""
        return _report(self)

    def plot(self):
        """The stage curve and the class counts, side by side (chapter 5)."""
        return _plot(self)

    def plot_issues(self, n_labels: int = 8, n_groups: int = 4):
        """The suspected label errors and duplicate groups as images (chapter 5)."""
        return self.issues.plot(n_labels, n_groups)


def _imagenet_head(model, final: torch.Tensor, y: np.ndarray, classes: list[str]):
    """Mean confidence, within-class consistency and each class's commonest top-1."""
    with torch.no_grad():
        probs = model.get_classifier()(final).softmax(1)
    top1 = probs.argmax(1).numpy()
    names = imagenet_classes()
    shares, common = [], {}
    for c, name in enumerate(classes):
        label, n = Counter(top1[y == c].tolist()).most_common(1)[0]
        shares.append(n / int((y == c).sum()))
        common[name] = names[label]
    return float(probs.max(1).values.mean()), float(np.mean(shares)), common


def _similarity(
    curve: list[float], best: int, verdict: Verdict, consistency: float
) -> tuple[bool, str]:
    """Is the data ImageNet-like? The stage curve decides where the verdict rule can tell
    (the chosen stage ``best`` against the final one); the ImageNet head decides where it
    cannot."""
    final = len(curve) - 1
    if best == final:
        return True, "the final stage is the best: ImageNet-like features"
    name = STAGE_NAMES[best]
    if verdict.verdict == "A better":
        return False, (
            f"a middle stage ({name}) is better than the final one by "
            f"{100 * verdict.difference:.1f} points (95% interval {verdict.interval()}): "
            "the most ImageNet-specific features help less, so the data differ"
        )
    if verdict.verdict == "equivalent":
        return True, (
            f"the final stage is as good as the best one ({name}): {name} minus final "
            f"is {verdict.interval()}, inside ±{100 * verdict.margin:g} point, so "
            "ImageNet-like features"
        )
    similar = consistency >= 0.5
    return similar, (
        f"the stage curve cannot tell: {name} minus the final stage is "
        f"{verdict.interval()}, inconclusive; the ImageNet head gives "
        f"{'a consistent' if similar else 'no consistent'} label within classes"
    )


def _step_seconds(model, image_size: int, batch: int, device) -> float:
    """Seconds of one training step (:func:`tlutils.train.step_seconds`), measured once
    per machine, model, size and float type, then read from the cache."""
    key = (
        f"{type(model).__name__}|{image_size}|{batch}|{device.type}|"
        f"{amp_dtype(device)}|{torch.__version__}|{platform.machine()}|"
        f"{os.cpu_count()}|{torch.get_num_threads()}"
    )
    path = cache_dir() / "step_seconds.json"
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # a damaged file: measure again and rewrite it
        known = {}
    if key in known:
        return float(known[key])
    known[key] = step_seconds(model, batch, image_size, device)
    atomic_write_text(path, json.dumps(known))
    return known[key]


def _epoch_seconds(
    model, n_train: int, image_size: int, device, batch_size: int = 32
) -> float:
    """Seconds per epoch of fine-tuning: a training step at the training batch size times
    the number of steps in an epoch (chapter 5). On a CPU a step's time grows much less
    than the batch, so the step is timed at the batch size training uses."""
    batch = min(batch_size, n_train)
    return _step_seconds(model, image_size, batch, device) * -(-n_train // batch)


def diagnose(
    folder: str | Path,
    image_size: int = 160,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    batch_size: int | None = None,
) -> Diagnosis:
    """Measure a folder of your images and recommend what to train (chapter 5).

    The folder is read once (:func:`scan_folder`); the pooled features of every stage are
    extracted once and cached (``batch_size`` images per forward pass, the default of
    :func:`tlutils.extract_features` if ``None``). The stage with the best linear probe is
    chosen out of fold on the training part (:func:`tlutils.probe.choose_stage`) and
    reported on the validation part (balanced accuracy and per-class recall too). The
    returned :class:`Diagnosis` carries the features and the choice, for
    :func:`tlutils.train_folder`. See the module's docstring.
    """
    start = time.perf_counter()
    device = torch.device(device) if device is not None else get_device()
    scan = scan_folder(folder)
    model = create_model().eval()
    tf = create_transform(data_config(model), image_size=image_size)
    data = load_image_folder(folder, tf, tf, seed=seed, check_images=scan.unreadable)
    kw = {"device": device, "progress": progress, "batch_size": batch_size}
    train_f, ytr = stage_features(model, data.train, **kw)
    val_f, yva = stage_features(model, data.val, **kw)
    features = FolderFeatures(train_f, ytr.numpy(), val_f, yva.numpy())
    ytr, yva = features.train_labels, features.val_labels
    choice = choose_stage(train_f, ytr, seed=seed)
    best, final = choice.stage, NUM_STAGES - 1
    curve = choice.curve()
    probe = fit_probe(train_f[best], ytr, C=choice.Cs[best])
    pred = probe.predict(val_f[best].numpy())
    recall = recall_score(yva, pred, labels=range(len(data.classes)), average=None)
    conf, consistency, top = _imagenet_head(model, train_f[final], ytr, data.classes)
    verdict = compare(choice.correct[best], choice.correct[final])
    similar, evidence = _similarity(curve, best, verdict, consistency)
    per_class = min(Counter(targets_of(data.train)).values())
    rec = recommend_case(per_class, similar)
    seconds = _epoch_seconds(
        replace_head(copy.deepcopy(model), len(data.classes)),
        len(ytr),
        image_size,
        device,
    )
    strategy = rec.strategy
    if strategy == "linear_probe" and best != final:
        strategy = "cut_probe"  # the probe measured best is a middle stage's: train it
    issues = find_data_issues(  # the out-of-fold probes and features already here
        {"train": train_f, "val": val_f},
        {"train": ytr, "val": yva},
        {"train": dataset_files(data.train), "val": dataset_files(data.val)},
        data.classes, stage=final, C=choice.Cs[final], seed=seed,
    )  # fmt: skip
    return Diagnosis(
        scan, image_size, curve, verdict, best, float((pred == yva).mean()),
        float(balanced_accuracy_score(yva, pred)),
        dict(zip(data.classes, map(float, recall), strict=True)),
        conf, consistency, top, similar, evidence, rec,
        strategy, seconds, str(device), seed, list(data.classes), data, features,
        choice, model, time.perf_counter() - start, issues,
    )  # fmt: skip


def _scan_lines(scan: FolderScan) -> list[str]:
    lines = [f"- layout: {scan.layout}; classes: {', '.join(scan.classes)}"]
    for part, counts in scan.counts.items():
        shown = ", ".join(f"{c} {n}" for c, n in counts.items())
        lines.append(f"- images ({part}): {shown}")
    lines.append(f"- imbalance (largest / smallest class): {scan.imbalance:.1f}")
    total = sum(scan.modes.values())
    gray = sum(n for m, n in scan.modes.items() if m in ("L", "LA", "1", "I", "F"))
    alpha = sum(n for m, n in scan.modes.items() if m in ("RGBA", "P", "PA"))
    lines.append(
        f"- grayscale {gray / total:.0%}, RGBA or palette {alpha / total:.0%} "
        "(all converted to RGB)"
    )
    for label, items in [
        ("unreadable files (skipped; delete or replace them)", scan.unreadable),
        (f"very small images (< {SMALL_SIDE} px)", scan.small),
        ("groups of identical files", scan.duplicates),
        ("identical files in both train and val (remove one copy)", scan.across_splits),
    ]:
        if items:
            shown = "; ".join(map(str, items[:5])) + (" ..." if len(items) > 5 else "")
            lines.append(f"- {len(items)} {label}: {shown}")
    if scan.nested:
        shown = "; ".join(f"{f} ({n})" for f, n in list(scan.nested.items())[:5])
        more = " ..." if len(scan.nested) > 5 else ""
        lines.append(
            f"- {sum(scan.nested.values())} images in sub-folders of class folders, "
            f"counted in their class (move them if they belong elsewhere): {shown}{more}"
        )
    if scan.ignored:
        lines.append(f"- {scan.ignored} files that are not images were ignored")
    return lines


def _report(d: Diagnosis) -> str:
    rec = d.recommendation
    lines = [f"# Diagnosis of {d.scan.root}", "", "## The folder", *_scan_lines(d.scan)]
    lines += [
        "",
        f"## Linear probes per stage ({d.image_size} px; cross-validated on the "
        f"{d.stage_verdict.images} training images)",
    ]
    lines += [
        f"- {STAGE_NAMES[s]}: {a:.3f}{'  <- best' if s == d.best_stage else ''}"
        for s, a in enumerate(d.stage_accuracy)
    ]
    final = STAGE_NAMES[len(d.stage_accuracy) - 1]
    if d.best_stage != len(d.stage_accuracy) - 1:
        lines.append(
            f"- {STAGE_NAMES[d.best_stage]} against {final}: "
            + d.stage_verdict.sentence(STAGE_NAMES[d.best_stage], final)
        )
    lines.append(
        f"- best stage ({STAGE_NAMES[d.best_stage]}) on validation: accuracy "
        f"{d.val_accuracy:.3f}, balanced "
        f"accuracy {d.val_balanced_accuracy:.3f}"
    )
    if d.scan.imbalance > 1.5:
        lines += [f"  - recall of {c}: {r:.3f}" for c, r in d.per_class_recall.items()]
    if d.issues is not None:
        lines += ["", *d.issues.report().splitlines()]
    lines += ["", "## Similarity to ImageNet", f"- stage curve: {d.evidence}"]
    lines.append(
        f"- ImageNet head: mean confidence {d.imagenet_confidence:.2f}, same top-1 "
        f"label within a class {d.imagenet_consistency:.0%} of the time"
    )
    lines += [f"  - {c}: mostly '{t}'" for c, t in d.imagenet_top.items()]
    lines += ["", "## Recommendation"]
    lines.append(
        f"- case {rec.case} ({rec.size}, {rec.similarity}): {rec.advice} "
        f"`tlutils train` will run: {d.train_strategy}"
        + (
            f" (the probe of {STAGE_NAMES[d.best_stage]}, which scored best on your "
            "training images)."
            if d.train_strategy != rec.strategy
            else "."
        )
    )
    lines.append(
        f"- the probe of {STAGE_NAMES[d.best_stage]} already reaches "
        f"{d.val_accuracy:.3f} on validation: `tlutils train` starts from it, keeps a "
        "fine-tune only if the verdict rule finds it at least as good on the same "
        f"images, and says so; one epoch of fine-tuning takes about "
        f"{d.seconds_per_epoch:.0f} s on {d.device}."
    )
    return "\n".join(lines)


def _plot(d: Diagnosis):
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(range(len(d.stage_accuracy)), d.stage_accuracy, "o-")
    left.plot([d.best_stage], [d.stage_accuracy[d.best_stage]], "r*", ms=14)
    left.set(xlabel="stage", ylabel="probe accuracy", title="Linear probe per stage")
    left.set_xticks(range(len(d.stage_accuracy)))
    totals = Counter()
    for part in d.scan.counts.values():
        totals.update(part)
    right.barh(list(totals), list(totals.values()))
    right.set(xlabel="images", title="Images per class")
    fig.tight_layout()
    return fig
