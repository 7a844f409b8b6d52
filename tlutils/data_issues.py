"""Label problems and duplicates, found by measurement on frozen features (chapter 5).

Before blaming the model, check the data. Two checks use the features the diagnosis
already extracts:

**Suspected label errors** (confident learning, Northcutt et al. 2021). A linear probe
is fitted by stratified k-fold cross-validation (:func:`out_of_fold_probabilities`), so
that every image gets probabilities from a probe that never saw it. Each class ``j``
gets a threshold: the mean probability of ``j`` over the images labelled ``j`` (how sure
the probe is of that class's own images). An image is suspect when another class's
probability reaches that class's threshold and exceeds the probability of its given
label; the most contradicted images come first (the margin between the two).
:func:`find_label_issues` lists them. A suspect is a question for a person, never a
verdict: check it, then relabel, move or remove it, never silently.

**Duplicates** (:func:`find_duplicates`). Identical files (same bytes) and
near-identical images (cosine similarity of their features at least
:data:`DUPLICATE_THRESHOLD`) are grouped. Copies in both train and val inflate the
validation score (leakage), copies under two classes contradict each other, and copies
within a class weigh double.

:func:`find_data_issues` runs both on a diagnosis's features; :func:`plot_data_issues`
shows the suspects and the duplicates as images with captions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DUPLICATE_THRESHOLD",
    "LabelIssue",
    "DuplicateGroup",
    "DataIssues",
    "dataset_files",
    "out_of_fold_probabilities",
    "find_label_issues",
    "similarity_features",
    "find_duplicates",
    "find_data_issues",
    "plot_data_issues",
]

DUPLICATE_THRESHOLD = 0.90
"""Cosine similarity of :func:`similarity_features` from which two images count as near
duplicates, chosen by measurement (``scripts/benchmark_data_issues.py threshold``, 160
px) on 750 flower photos and hymenoptera's 153 validation photos, each with 120 planted
copies (20 of each kind). At 0.90 no two distinct hymenoptera photos are joined and,
among the flowers, four pairs: three of two frames of one scene, one of two shots of
one sunflower (checked by eye); all 120 re-encoded (JPEG quality 60), shrunk (3/4) and
enlarged (3/2) copies are found, and 76 of 80 mirrored or 90% crops. At 0.94, 7 of the
40 re-encoded or shrunk flower copies are missed; at 0.88 a fifth pair of distinct
flower photos is joined. Copies shrunk to half size are found in hymenoptera (19 of 20:
large photos) but hardly among the flowers (3 of 20: 80 px, half the model's input). On
EuroSAT's 64 px tiles the check fails: featureless tiles (forest, open water) look
alike (73 of 600 distinct tiles joined) and re-encoded copies are missed (1 of 20)."""


def dataset_files(dataset) -> list[str]:
    """The image files of an ImageFolder or a (nested) Subset of one, in the dataset's
    order: the order of the features extracted from it (chapter 5)."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        inner = dataset_files(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    if not hasattr(dataset, "samples"):
        raise TypeError(
            f"Need an ImageFolder (or a Subset of one) to know its files; got "
            f"{type(dataset).__name__}."
        )
    return [str(path) for path, _ in dataset.samples]


def _array(x, what: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim == 0 or len(a) == 0:
        raise ValueError(f"{what} is empty: give one row per image.")
    return a


def _checked(features, labels) -> tuple[np.ndarray, np.ndarray]:
    x = _array(features, "features").reshape(len(features), -1).astype(np.float64)
    y = _array(labels, "labels")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"Give one label per image: {len(x)} rows of features, labels of shape "
            f"{y.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError("labels must be class indices (0, 1, 2 ...), not names.")
    return x, y.astype(np.int64)


def out_of_fold_probabilities(
    features,
    labels,
    C: float | None = None,
    folds: int = 3,
    seed: int = 0,
    num_classes: int | None = None,
) -> np.ndarray:
    """Each image's class probabilities from a linear probe that did not see it
    (chapter 5): ``[images, classes]``.

    The course's probe (:func:`tlutils.probe.fit_probe`) is fitted on ``folds - 1``
    folds of a stratified, seeded k-fold split and predicts the held-out fold (fewer
    folds if the smallest class has fewer images). ``C`` is the probe's penalty, e.g.
    the one the diagnosis chose for the stage; ``None`` chooses it once on all images
    (:func:`tlutils.probe.choose_probe_C`).
    """
    from sklearn.model_selection import StratifiedKFold

    from .probe import choose_probe_C, fit_probe

    x, y = _checked(features, labels)
    k = int(num_classes or y.max() + 1)
    if y.max() >= k:
        raise ValueError(
            f"labels go up to {y.max()}, but there are {k} classes: give class "
            "indices from 0 to num_classes - 1."
        )
    counts = np.bincount(y, minlength=k)
    if (counts < 2).any():
        raise ValueError(
            "Every class needs at least 2 images for out-of-fold probabilities "
            f"(counts per class: {counts.tolist()}); add images or drop the class."
        )
    if folds < 2:
        raise ValueError(f"folds must be at least 2; got {folds}.")
    if C is None:
        C = choose_probe_C(x, y, seed=seed)
    split = StratifiedKFold(
        min(folds, int(counts.min())), shuffle=True, random_state=seed
    )
    probs = np.zeros((len(y), k))
    for inner, held in split.split(np.zeros(len(y)), y):
        probe = fit_probe(x[inner], y[inner], C=C)
        probs[np.ix_(held, probe[-1].classes_)] = probe.predict_proba(x[held])
    return probs


@dataclass(frozen=True)
class LabelIssue:
    """An image whose given label the out-of-fold probe contradicts (chapter 5)."""

    file: str
    given: str  # the label it has (its folder)
    suggested: str  # the class the probe finds
    probability: float  # the probe's probability of the suggested class
    given_probability: float  # the probe's probability of the given label
    threshold: float  # the suggested class's own images' mean probability

    @property
    def margin(self) -> float:
        """How much more probable the suggested class is than the given one."""
        return self.probability - self.given_probability

    @property
    def reason(self) -> str:
        """One sentence: why the image is suspect."""
        return (
            f"labelled {self.given} ({self.given_probability:.2f}) but looks like "
            f"{self.suggested} ({self.probability:.2f}; images labelled "
            f"{self.suggested} average {self.threshold:.2f})"
        )


def _names(classes: Sequence[str] | None, k: int) -> list[str]:
    if classes is None:
        return [str(i) for i in range(k)]
    if len(classes) != k:
        raise ValueError(
            f"Give one class name per column of the probabilities: {k} columns, "
            f"{len(classes)} names."
        )
    return list(classes)


def find_label_issues(
    probabilities,
    labels,
    files: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> list[LabelIssue]:
    """Suspected label errors by confident learning (Northcutt et al. 2021), most
    contradicted first (chapter 5).

    ``probabilities`` are out-of-fold (:func:`out_of_fold_probabilities`). Class ``j``'s
    threshold is the mean probability of ``j`` over the images labelled ``j``; an image
    is suspect when another class reaches its threshold and is more probable than the
    given label. Ranked by the margin between the two probabilities.
    """
    p = _array(probabilities, "probabilities").astype(np.float64)
    if p.ndim != 2 or p.min() < -1e-6 or np.abs(p.sum(1) - 1).max() > 1e-3:
        raise ValueError(
            "probabilities must be [images, classes] with rows summing to 1 "
            "(out-of-fold probabilities, see out_of_fold_probabilities)."
        )
    _, y = _checked(p, labels)
    k = p.shape[1]
    if y.max() >= k:
        raise ValueError(f"labels must be below the number of classes ({k}).")
    names = _names(classes, k)
    files = [str(i) for i in range(len(y))] if files is None else list(files)
    if len(files) != len(y):
        raise ValueError(
            f"Give one file per image: {len(y)} images, {len(files)} files."
        )
    threshold = np.array(
        [p[y == j, j].mean() if (y == j).any() else np.inf for j in range(k)]
    )
    given = p[np.arange(len(y)), y]
    reach = (p >= threshold) & (p > given[:, None])
    reach[np.arange(len(y)), y] = False
    issues = []
    for i in np.flatnonzero(reach.any(1)):
        j = int(np.argmax(np.where(reach[i], p[i], -1.0)))
        issues.append(
            LabelIssue(
                files[i],
                names[y[i]],
                names[j],
                float(p[i, j]),
                float(given[i]),
                float(threshold[j]),
            )  # fmt: skip
        )
    return sorted(issues, key=lambda issue: -issue.margin)


def similarity_features(
    features: Mapping[int, torch.Tensor] | torch.Tensor,
) -> torch.Tensor:
    """The vectors whose cosine similarity finds near duplicates (chapter 5).

    Each stage's pooled features (a ``{stage: [images, channels]}`` mapping, as
    :func:`tlutils.features.stage_features` returns, or one tensor) are centred on the
    images' mean and scaled to length 1, so that every stage counts once and what all
    images share does not; the stages are joined and scaled to length 1 again. Early
    stages see textures and edges, late ones objects: together they separate copies from
    look-alikes better than the final stage alone (measured: see
    :data:`DUPLICATE_THRESHOLD`).
    """
    parts = features.values() if isinstance(features, Mapping) else [features]
    unit = []
    for x in parts:
        x = torch.as_tensor(x, dtype=torch.float32).reshape(len(x), -1)
        unit.append(torch.nn.functional.normalize(x - x.mean(0), dim=1))
    if not unit or len(unit[0]) == 0:
        raise ValueError("No features given: give one row per image.")
    return torch.nn.functional.normalize(torch.cat(unit, 1), dim=1)


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are the same file or look the same to the network (chapter 5)."""

    files: list[str]
    classes: list[str]  # each file's class ("" if unknown)
    splits: list[str]  # each file's part, e.g. "train" or "val" ("" if unknown)
    similarity: float  # the highest cosine similarity of two members
    lowest: float  # the lowest cosine similarity that links a member to the group
    identical: bool  # every member has the same bytes

    @property
    def problems(self) -> list[str]:
        """``"across train and val"``, ``"across classes"`` and/or ``"within a
        class"``."""
        found = []
        if len(set(self.splits) - {""}) > 1:
            found.append("across train and val")
        if len(set(self.classes) - {""}) > 1:
            found.append("across classes")
        return found or ["within a class"]

    @property
    def kind(self) -> str:
        """``"identical files"`` or ``"near-identical (cosine ...)"``."""
        if self.identical:
            return "identical files"
        if self.lowest >= self.similarity - 5e-4:
            return f"near-identical (cosine {self.similarity:.3f})"
        return f"near-identical (cosine {self.lowest:.3f} to {self.similarity:.3f})"

    @property
    def reason(self) -> str:
        """What the group's problems do, and what to do about them."""
        said = []
        problems = self.problems
        if "across train and val" in problems:
            said.append(
                "in train and val: validation scores an image the model trained on "
                "(leakage); remove the copies from val"
            )
        if "across classes" in problems:
            named = ", ".join(sorted(set(self.classes)))
            said.append(
                f"labelled {named}: at most one label is right; keep one copy, in its "
                "class"
            )
        if problems == ["within a class"]:
            said.append("copies within a class count twice; keep one")
        return f"{self.kind}, " + "; ".join(said)


def _sha256(file: str) -> str | None:
    try:
        return hashlib.sha256(Path(file).read_bytes()).hexdigest()
    except OSError:
        return None


def _similar_pairs(z: torch.Tensor, threshold: float, chunk: int = 1024):
    """``(i, j, cosine)`` with ``i < j`` for every pair at or above ``threshold``,
    computed ``chunk`` rows at a time so that memory stays small."""
    for start in range(0, len(z), chunk):
        sims = z[start : start + chunk] @ z.T
        rows, cols = torch.nonzero(sims >= threshold, as_tuple=True)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if start + r < c:
                yield start + r, c, float(sims[r, c])


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _groups(n: int, pairs: list[tuple[int, int, float]]) -> dict[int, list]:
    """Connected groups of the pairs (union-find): root -> the pairs inside it."""
    parent = list(range(n))
    for i, j, _ in pairs:
        parent[_find(parent, i)] = _find(parent, j)
    grouped: dict[int, list] = {}
    for pair in pairs:
        grouped.setdefault(_find(parent, pair[0]), []).append(pair)
    return grouped


def _per_image(values: Sequence[str] | None, n: int, what: str) -> list[str]:
    if values is None:
        return [""] * n
    if len(values) != n:
        raise ValueError(f"Give one {what} per image: {n} images, {len(values)} given.")
    return [str(v) for v in values]


def find_duplicates(
    features: Mapping[int, torch.Tensor] | torch.Tensor,
    files: Sequence[str],
    classes: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    threshold: float = DUPLICATE_THRESHOLD,
    exact: bool = True,
) -> list[DuplicateGroup]:
    """Groups of identical or near-identical images, the worst problems first
    (chapter 5).

    ``features`` are the images' stage features (``{stage: tensor}`` or one tensor),
    compared by the cosine similarity of :func:`similarity_features`; pairs at or above
    ``threshold`` (:data:`DUPLICATE_THRESHOLD`) are joined into groups, as are files
    with the same bytes (``exact``). ``classes`` and ``splits`` give each image's class
    name and part (``"train"``, ``"val"``) so that each group says whether it crosses
    classes or the train/val split. Groups across the split or across classes come
    first, then the most similar.
    """
    if not 0 < threshold <= 1:
        raise ValueError(
            f"threshold is a cosine similarity in (0, 1]; got {threshold}."
        )
    z = similarity_features(features)
    n = len(z)
    files = [str(f) for f in files]
    if len(files) != n:
        raise ValueError(f"Give one file per image: {n} images, {len(files)} files.")
    classes, splits = _per_image(classes, n, "class"), _per_image(splits, n, "split")
    pairs = list(_similar_pairs(z, threshold))
    digests = [_sha256(f) for f in files] if exact else [None] * n
    by_digest: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        if d is not None:
            by_digest.setdefault(d, []).append(i)
    for same in by_digest.values():
        pairs += [(a, b, float(z[a] @ z[b])) for a, b in zip(same, same[1:])]
    found = []
    for inside in _groups(n, pairs).values():
        members = sorted({i for pair in inside for i in pair[:2]})
        sims = [s for *_, s in inside]
        found.append(
            DuplicateGroup(
                [files[i] for i in members],
                [classes[i] for i in members],
                [splits[i] for i in members],
                min(1.0, max(sims)),
                min(1.0, min(sims)),
                len({digests[i] for i in members}) == 1
                and digests[members[0]] is not None,
            )  # fmt: skip
        )
    order = {"across train and val": 0, "across classes": 1, "within a class": 2}
    return sorted(found, key=lambda g: (min(order[p] for p in g.problems), -g.lowest))


@dataclass
class DataIssues:
    """Suspected label errors and duplicate groups of a folder (chapter 5)."""

    label_issues: list[LabelIssue]
    duplicates: list[DuplicateGroup]
    images: int  # how many images were checked
    threshold: float = DUPLICATE_THRESHOLD
    stage: int | None = None  # the stage whose probe judged the labels
    notes: list[str] = field(default_factory=list)

    def lines(self, n: int = 10) -> list[str]:
        """Markdown bullet lines: the first ``n`` suspects and groups, with reasons."""
        out = [
            f"- {len(self.label_issues)} of {self.images} images have a label that the "
            "out-of-fold probe contradicts (confident learning; check each: relabel, "
            "move or remove, never silently)"
        ]
        out += [f"  - {i.file}: {i.reason}" for i in self.label_issues[:n]]
        out.append(
            f"- {len(self.duplicates)} groups of identical or near-identical images "
            f"(cosine >= {self.threshold:g})"
        )
        for g in self.duplicates[:n]:
            members = ", ".join(
                f"{f} ({'/'.join(x for x in (s, c) if x)})"
                for f, c, s in zip(g.files, g.classes, g.splits, strict=True)
            )
            out.append(f"  - {g.reason}: {members}")
        hidden = max(0, len(self.label_issues) - n) + max(0, len(self.duplicates) - n)
        if hidden:
            out.append(f"  - ... and {hidden} more (all of them: rows())")
        return out + [f"- {note}" for note in self.notes]

    def rows(self) -> list[dict]:
        """One dict per suspect and per member of a duplicate group (file, problem,
        class, suggested, probability, group, reason), e.g. for a CSV file
        (chapter 5)."""
        out = [
            {"file": i.file, "problem": "label", "class": i.given,
             "suggested": i.suggested, "probability": round(i.probability, 4),
             "group": "", "reason": i.reason}
            for i in self.label_issues
        ]  # fmt: skip
        for k, g in enumerate(self.duplicates, 1):
            out += [
                {"file": f, "problem": "duplicate: " + ", ".join(g.problems),
                 "class": c, "suggested": "", "probability": round(g.lowest, 4),
                 "group": k, "reason": g.reason}
                for f, c in zip(g.files, g.classes, strict=True)
            ]  # fmt: skip
        return out

    def report(self, n: int = 10) -> str:
        """The lines as one markdown section (chapter 5)."""
        return "\n".join(["## Labels and duplicates", *self.lines(n)])

    def plot(self, n_labels: int = 8, n_groups: int = 4, ncols: int = 4):
        """The suspects and duplicate groups as images (:func:`plot_data_issues`)."""
        return plot_data_issues(self, n_labels, n_groups, ncols)


def find_data_issues(
    features: Mapping[str, Mapping[int, torch.Tensor]],
    labels: Mapping[str, object],
    files: Mapping[str, Sequence[str]],
    classes: Sequence[str],
    stage: int | None = None,
    C: float | None = None,
    seed: int = 0,
    threshold: float = DUPLICATE_THRESHOLD,
) -> DataIssues:
    """Suspected label errors and duplicates of a folder, from its stage features
    (chapter 5).

    ``features``, ``labels`` and ``files`` map each part (``"train"``, ``"val"``) to its
    ``{stage: features}`` (as :func:`tlutils.features.stage_features` returns), class
    indices and files, in the same order. The labels of all parts are judged together
    by :func:`out_of_fold_probabilities` of the probe of ``stage`` (default: the last
    stage) with penalty ``C``; duplicates are found on all stages together, each image
    tagged with its part.
    """
    parts = list(features)
    if not parts or set(parts) != set(labels) or set(parts) != set(files):
        raise ValueError(
            "features, labels and files must map the same parts (e.g. 'train' and "
            f"'val'); got {sorted(features)}, {sorted(labels)} and {sorted(files)}."
        )
    stages = sorted(features[parts[0]])
    if any(sorted(features[p]) != stages for p in parts):
        raise ValueError("Every part must have features of the same stages.")
    stage = stages[-1] if stage is None else stage
    if stage not in stages:
        raise ValueError(f"No features of stage {stage}; stages given: {stages}.")
    joined = {
        s: torch.cat([torch.as_tensor(features[p][s]) for p in parts]) for s in stages
    }
    y = np.concatenate([_array(labels[p], f"labels of {p}") for p in parts])
    names = [str(f) for p in parts for f in files[p]]
    split = [p for p in parts for _ in files[p]]
    if len(names) != len(y) or len(y) != len(joined[stage]):
        raise ValueError(
            "Each part needs as many files as labels and feature rows; got "
            f"{len(names)} files, {len(y)} labels and {len(joined[stage])} rows in all."
        )
    probs = out_of_fold_probabilities(
        joined[stage], y, C, seed=seed, num_classes=len(classes)
    )
    issues = find_label_issues(probs, y, names, classes)
    tags = split if len(parts) > 1 else None
    groups = find_duplicates(
        joined, names, [classes[i] for i in y], tags, threshold=threshold
    )
    return DataIssues(issues, groups, len(y), threshold, stage)


def plot_data_issues(
    issues: DataIssues, n_labels: int = 8, n_groups: int = 4, ncols: int = 4
):
    """The first ``n_labels`` suspected label errors (red captions: given label,
    suggested class and probabilities) and the first ``n_groups`` duplicate groups
    (blue captions: group, part, class, similarity), each group starting a row unless
    it fits beside the previous one (chapter 5). Returns the figure."""
    from .errors import _short_file, image_grid

    cells: list[tuple[str | None, str, str]] = []
    for s in issues.label_issues[:n_labels]:
        caption = (
            f"given {s.given} {s.given_probability:.2f}\n"
            f"looks like {s.suggested} {s.probability:.2f}\n{_short_file(s.file)}"
        )
        cells.append((s.file, caption, "C3"))
    while cells and len(cells) % ncols:
        cells.append((None, "", "black"))
    for g_i, g in enumerate(issues.duplicates[:n_groups]):
        shown = list(zip(g.files, g.classes, g.splits, strict=True))[:ncols]
        if len(cells) % ncols + len(shown) > ncols:
            cells += [(None, "", "black")] * (ncols - len(cells) % ncols)
        what = "same file" if g.identical else f"cos {g.lowest:.3f}"
        for f, c, s in shown:
            where = "/".join(x for x in (s, c) if x)
            caption = f"group {g_i + 1}: {what}\n{where}\n{_short_file(f)}"
            cells.append((f, caption, "C0"))
    if not cells:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"no suspects and no duplicates in {issues.images} images",
                ha="center")  # fmt: skip
        return fig
    title = (
        f"{len(issues.label_issues)} suspected labels (red) and "
        f"{len(issues.duplicates)} duplicate groups (blue) in {issues.images} images"
    )
    images, captions, colors = zip(*cells, strict=True)
    return image_grid(images, captions, ncols, colors, title)
