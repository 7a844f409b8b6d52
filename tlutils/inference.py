"""Use a trained model: top classes of new images, and scores on a labelled folder (chapter 5).

:func:`predict_images` gives the top classes of an image file or a folder of images with a
trained model (a :class:`~tlutils.checkpoint.TrainedModel` or a checkpoint's path), and
:func:`evaluate_folder` scores it on a labelled folder for error analysis
(:class:`Evaluation`: accuracy, per-class report, confusion matrix, the most confidently
wrong files). Both run on the fastest device here unless told otherwise, and never change
the model they are given.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import classification_report

from .checkpoint import TrainedModel, load_model
from .data import is_image_file, load_rgb

__all__ = ["Prediction", "predict_images", "Evaluation", "evaluate_folder"]


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


def _readable(files: list[Path]):
    """``(file, RGB image)`` for the files that decode; the others are skipped with a
    warning that names them. Read lazily, so a large folder is never all in memory."""
    for file in files:
        try:
            yield file, load_rgb(file)
        except RuntimeError as err:
            warnings.warn(f"Skipping {err}", stacklevel=3)


@torch.no_grad()
def predict_images(
    trained: TrainedModel | str | Path,
    path: str | Path,
    top_k: int = 3,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> list[Prediction]:
    """Top-``k`` classes with probabilities for an image file or every image in a folder (chapter 5).

    ``trained`` is a :class:`~tlutils.checkpoint.TrainedModel` or the path of a
    checkpoint. Unreadable images are skipped with a warning that names them. ``device``
    moves the model there (default: where it is); ``progress`` shows a labelled bar.
    """
    from tqdm.auto import tqdm

    if isinstance(trained, (str, Path)):
        trained = load_model(trained)
    transform = trained.transform()
    model = trained.model.eval()
    if device is not None:
        model = model.to(device)
    device = next(model.parameters()).device
    k = max(1, min(top_k, len(trained.classes)))
    files = _image_files(Path(path))
    rows = []
    bar = tqdm(total=len(files), desc="predicting images", disable=not progress)
    pairs = _readable(files)
    while chunk := [pair for _, pair in zip(range(batch_size), pairs)]:
        batch = torch.stack([transform(img) for _, img in chunk]).to(device)
        probs = model(batch).float().softmax(1).cpu()
        top = probs.topk(k, dim=1)
        for (file, _), p, i in zip(chunk, top.values, top.indices, strict=True):
            names = [trained.classes[j] for j in i.tolist()]
            rows.append(Prediction(str(file), names, [round(v, 6) for v in p.tolist()]))
        bar.update(len(chunk))
    bar.close()
    return rows


@dataclass
class Evaluation:
    """A trained model scored on a labelled folder, for error analysis (chapter 5)."""

    classes: list[str]  # the model's classes
    files: list[str]
    true: list[int]  # class index of each file (its folder)
    predicted: list[int]
    confidence: list[float]  # probability of the predicted class
    true_probability: list[float]  # probability the model gave the true class

    @property
    def accuracy(self) -> float:
        """Share of images whose top class is their folder's."""
        return float(np.mean(np.asarray(self.true) == np.asarray(self.predicted)))

    @property
    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present in the folder."""
        from sklearn.metrics import balanced_accuracy_score

        return float(balanced_accuracy_score(self.true, self.predicted))

    def confusion_matrix(self) -> np.ndarray:
        """Rows: true class; columns: predicted class (the model's class order)."""
        from sklearn.metrics import confusion_matrix

        return confusion_matrix(
            self.true, self.predicted, labels=range(len(self.classes))
        )

    def most_confidently_wrong(self, n: int = 10) -> list[tuple[str, str, str, float]]:
        """``(file, true class, predicted class, confidence)`` of the ``n`` wrong
        predictions the model was surest of: where to look first (chapter 5)."""
        wrong = [i for i, (t, p) in enumerate(zip(self.true, self.predicted)) if t != p]
        wrong.sort(key=lambda i: -self.confidence[i])
        return [
            (
                self.files[i],
                self.classes[self.true[i]],
                self.classes[self.predicted[i]],
                self.confidence[i],
            )
            for i in wrong[:n]
        ]

    def report(self, n_wrong: int = 10) -> str:
        """Accuracy, balanced accuracy, per-class precision and recall, the confusion
        matrix and the most confidently wrong files, as text (chapter 5)."""
        present = sorted(set(self.true) | set(self.predicted))
        lines = [
            f"{len(self.files)} images; accuracy {self.accuracy:.3f}, balanced accuracy "
            f"{self.balanced_accuracy:.3f}",
            "",
            classification_report(
                self.true,
                self.predicted,
                labels=present,
                target_names=[self.classes[c] for c in present],
                zero_division=0,
            ),  # fmt: skip
            "confusion matrix (rows: true class, columns: predicted class)",
        ]
        matrix = self.confusion_matrix()
        width = max(7, *(len(c) for c in self.classes)) + 1
        lines.append(
            " " * width + "".join(f"{c[: width - 1]:>{width}}" for c in self.classes)
        )
        for c, row in zip(self.classes, matrix, strict=True):
            lines.append(f"{c:<{width}}" + "".join(f"{v:>{width}}" for v in row))
        wrong = self.most_confidently_wrong(n_wrong)
        if wrong:
            lines += ["", f"most confidently wrong ({len(wrong)} shown):"]
            lines += [f"  {f}: {t} predicted {p} ({c:.3f})" for f, t, p, c in wrong]
        return "\n".join(lines)

    def plot(self, normalize: bool = False):
        """The confusion matrix as a figure (:func:`tlutils.plot_confusion_matrix`)."""
        from .plot import plot_confusion_matrix

        return plot_confusion_matrix(
            self.true, self.predicted, self.classes, normalize=normalize
        )

    def rows(self) -> list[dict]:
        """One dict per image (file, true, predicted, confidence, true_probability,
        correct), e.g. for a CSV file."""
        return [
            {
                "file": f,
                "true": self.classes[t],
                "predicted": self.classes[p],
                "confidence": c,
                "true_probability": q,
                "correct": int(t == p),
            }
            for f, t, p, c, q in zip(
                self.files,
                self.true,
                self.predicted,
                self.confidence,
                self.true_probability,
                strict=True,
            )  # fmt: skip
        ]


def evaluate_folder(
    trained: TrainedModel | str | Path,
    folder: str | Path,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Evaluation:
    """Score a trained model on a labelled folder: one sub-folder per class (chapter 5).

    The sub-folders' names must be among the model's classes (a folder may hold fewer);
    a folder split into ``train/`` and ``val/`` is scored on ``val/``. Images in nested
    sub-folders count for their class; unreadable files are skipped with a warning.
    """
    if isinstance(trained, (str, Path)):
        trained = load_model(trained)
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} does not exist. Give a folder with one sub-folder per class."
        )
    if (root / "train").is_dir() and (root / "val").is_dir():
        root = root / "val"
    names = sorted(d.name for d in root.iterdir() if d.is_dir())
    unknown = [n for n in names if n not in trained.classes]
    if not names or unknown:
        raise ValueError(
            f"{root} must hold one sub-folder per class named as the model's classes "
            f"({', '.join(trained.classes)}); "
            + (f"unknown: {', '.join(unknown)}." if unknown else "it has none.")
        )
    files, true, pred, conf, ptrue = [], [], [], [], []
    for name in names:
        if not any(is_image_file(p.name) for p in (root / name).rglob("*")):
            continue
        rows = predict_images(
            trained, root / name, top_k=len(trained.classes), batch_size=batch_size,
            device=device, progress=progress,
        )  # fmt: skip
        for row in rows:
            files.append(row.file)
            true.append(trained.classes.index(name))
            pred.append(trained.classes.index(row.classes[0]))
            conf.append(row.probabilities[0])
            ptrue.append(row.probabilities[row.classes.index(name)])
    if not files:
        raise ValueError(f"{root} holds no readable images in its class folders.")
    return Evaluation(list(trained.classes), files, true, pred, conf, ptrue)
