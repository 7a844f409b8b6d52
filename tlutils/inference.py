"""Use a trained model: top classes of new images, scores on a labelled folder
(chapter 5).

:func:`predict_images` gives the top classes of an image file or a folder of images with
a trained model (a :class:`~tlutils.checkpoint.TrainedModel` or a checkpoint's path),
and :func:`evaluate_folder` scores it on a labelled folder for error analysis
(:class:`Evaluation`: accuracy, per-class report, confusion matrix, the most confidently
wrong files, and the calibration: expected calibration error and reliability diagram).
Both run on the fastest device here unless told otherwise, and never change the model
they are given. Both divide the logits by the model's ``temperature`` (fitted on
validation images by :func:`tlutils.calibration.fit_temperature`; 1.0, no change, for
a model without one) before the softmax, so that the probabilities they print are
calibrated.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import classification_report

from .checkpoint import TrainedModel, load_model
from .data import image_files, load_rgb

__all__ = [
    "Prediction",
    "predict_images",
    "model_temperature",
    "Evaluation",
    "evaluate_folder",
    "confusion_lines",
    "REPORT_WIDTH",
]


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
    files = image_files(path)  # the one walk over a folder (tlutils.data)
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


def _as_trained(trained: TrainedModel | str | Path) -> TrainedModel:
    return load_model(trained) if isinstance(trained, (str, Path)) else trained


def model_temperature(trained: TrainedModel, temperature: float | None = None) -> float:
    """The temperature that divides the model's logits (chapter 5): ``temperature`` if
    given, else the model's own ``temperature`` (fitted by ``train``), else 1.0."""
    chosen = (
        getattr(trained, "temperature", None) if temperature is None else temperature
    )
    chosen = 1.0 if chosen is None else chosen
    try:
        t = float(chosen)
    except (TypeError, ValueError):
        t = float("nan")
    if not (math.isfinite(t) and t > 0):
        raise ValueError(
            f"The temperature must be a positive number (1.0 changes nothing); got "
            f"{chosen!r}. Refit it with tlutils.calibration.fit_temperature."
        )
    return t


@torch.no_grad()
def _logits(
    trained: TrainedModel,
    files: list[Path],
    batch_size: int,
    device: torch.device | str | None,
    progress: bool,
) -> tuple[list[Path], torch.Tensor]:
    """The files that decode and the model's raw logits for them, ``[files, classes]``
    in float32 on the CPU, computed ``batch_size`` images at a time."""
    from tqdm.auto import tqdm

    transform = trained.transform()
    model = trained.model.eval()
    if device is not None:
        model = model.to(device)
    device = next(model.parameters()).device
    kept, logits = [], []
    bar = tqdm(total=len(files), desc="predicting images", disable=not progress)
    pairs = _readable(files)
    while chunk := [pair for _, pair in zip(range(batch_size), pairs)]:
        batch = torch.stack([transform(img) for _, img in chunk]).to(device)
        logits.append(model(batch).float().cpu())
        kept += [file for file, _ in chunk]
        bar.update(len(chunk))
    bar.close()
    if not logits:
        return kept, torch.empty(0, len(trained.classes))
    return kept, torch.cat(logits)


def predict_images(
    trained: TrainedModel | str | Path,
    path: str | Path,
    top_k: int = 3,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    progress: bool = False,
    temperature: float | None = None,
) -> list[Prediction]:
    """Top-``k`` classes with probabilities of an image file or a folder's images
    (chapter 5).

    ``trained`` is a :class:`~tlutils.checkpoint.TrainedModel` or the path of a
    checkpoint. Unreadable images are skipped with a warning that names them. ``device``
    moves the model there (default: where it is); ``progress`` shows a labelled bar. The
    logits are divided by ``temperature`` (default: the model's, see
    :func:`model_temperature`) before the softmax.
    """
    trained = _as_trained(trained)
    t = model_temperature(trained, temperature)
    k = max(1, min(top_k, len(trained.classes)))
    files, logits = _logits(
        trained, _image_files(Path(path)), batch_size, device, progress
    )
    top = (logits / t).softmax(1).topk(k, dim=1)
    rows = []
    for file, p, i in zip(files, top.values, top.indices, strict=True):
        names = [trained.classes[j] for j in i.tolist()]
        rows.append(Prediction(str(file), names, [round(v, 6) for v in p.tolist()]))
    return rows


REPORT_WIDTH = 100
"""Columns that :meth:`Evaluation.report`'s confusion matrix fits in (up to about 20
classes): longer class names are abbreviated in its header, with a key below."""


@dataclass
class Evaluation:
    """A trained model scored on a labelled folder, for error analysis (chapter 5).

    ``logits`` (the model's raw outputs, before the temperature) and ``temperature``
    are kept when :func:`evaluate_folder` made it, so that the probabilities can be
    recomputed at another temperature (:meth:`with_temperature`) or a temperature fitted
    on these images (:meth:`fit_temperature`).
    """

    classes: list[str]  # the model's classes
    files: list[str]
    true: list[int]  # class index of each file (its folder)
    predicted: list[int]
    confidence: list[float]  # probability of the predicted class
    true_probability: list[float]  # probability the model gave the true class
    logits: list[list[float]] | None = None  # raw outputs, [files, classes]
    temperature: float = 1.0  # the logits were divided by it before the softmax

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

    def correct(self) -> np.ndarray:
        """Whether each image's top class is its folder's (booleans, in file order): the
        per-image scores the verdict rule pairs (:func:`tlutils.verdict.compare`)."""
        return np.asarray(self.true) == np.asarray(self.predicted)

    def calibration(self, bins: int = 15):
        """Confidence against accuracy in ``bins`` bins: a
        :class:`tlutils.calibration.Calibration` with ``ece`` and ``plot()``
        (chapter 5)."""
        from .calibration import Calibration

        return Calibration.from_confidence(self.confidence, self.correct(), bins)

    @property
    def ece(self) -> float:
        """Expected calibration error with 15 bins (chapter 5): 0 when the model's
        confidence matches its accuracy."""
        return self.calibration().ece

    def probabilities(self) -> np.ndarray:
        """``softmax(logits / temperature)``, ``[files, classes]`` (chapter 5)."""
        from .calibration import softmax

        return softmax(self._logits(), self.temperature)

    def _logits(self) -> np.ndarray:
        if self.logits is None:
            raise ValueError(
                "This evaluation has no logits (it was made by hand): score the "
                "folder with tl.evaluate_folder, which keeps them."
            )
        return np.asarray(self.logits, dtype=np.float64)

    def with_temperature(self, temperature: float) -> Evaluation:
        """The same evaluation with the logits divided by ``temperature`` instead:
        confidences change, predictions do not (chapter 5)."""
        from .calibration import softmax

        p = softmax(self._logits(), temperature)
        rows = np.arange(len(p))
        return replace(
            self,
            predicted=p.argmax(1).tolist(),
            confidence=np.round(p.max(1), 6).tolist(),
            true_probability=np.round(p[rows, self.true], 6).tolist(),
            temperature=float(temperature),
        )

    def fit_temperature(self) -> float:
        """The temperature that minimises the negative log-likelihood of these images'
        logits (:func:`tlutils.calibration.fit_temperature`); report the ECE it gives on
        *other* images (chapter 5)."""
        from .calibration import fit_temperature

        return fit_temperature(self._logits(), np.asarray(self.true))

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
        """Accuracy, balanced accuracy, calibration, per-class precision and recall, the
        confusion matrix (within 100 columns: :data:`REPORT_WIDTH`) and the most
        confidently wrong files, as text (chapter 5)."""
        present = sorted(set(self.true) | set(self.predicted))
        lines = [
            f"{len(self.files)} images; accuracy {self.accuracy:.3f}, balanced "
            f"accuracy {self.balanced_accuracy:.3f}",
            f"expected calibration error {self.ece:.3f} (15 bins; temperature "
            f"{self.temperature:.3g})",
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
        lines += confusion_lines(self.confusion_matrix(), self.classes)
        wrong = self.most_confidently_wrong(n_wrong)
        if wrong:
            root, names = _relative([f for f, *_ in wrong])
            under = f" (files under {root})" if root else ""
            lines += ["", f"most confidently wrong ({len(wrong)} shown){under}:"]
            lines += [
                f"  {f}: {t} predicted {p} ({c:.3f})"
                for f, (_, t, p, c) in zip(names, wrong, strict=True)
            ]
        return "\n".join(lines)

    def plot(self, normalize: bool = False):
        """The confusion matrix as a figure (:func:`tlutils.plot_confusion_matrix`)."""
        from .plot import plot_confusion_matrix

        return plot_confusion_matrix(
            self.true, self.predicted, self.classes, normalize=normalize
        )

    def plot_confusion(self):
        """Counts and row-normalised confusion matrices side by side, with readable
        class names (:func:`tlutils.errors.plot_confusion`) (chapter 5)."""
        from .errors import plot_confusion

        return plot_confusion(self.true, self.predicted, self.classes)

    def plot_mistakes(self, n: int = 12, ncols: int = 4):
        """The ``n`` worst mistakes as images with true and predicted class and
        confidence (:func:`tlutils.errors.plot_worst_mistakes`) (chapter 5)."""
        from .errors import plot_worst_mistakes

        return plot_worst_mistakes(self, n=n, ncols=ncols)

    def reliability_diagram(self, bins: int = 15, ax=None):
        """Confidence against accuracy per bin, with the ECE in the title
        (:func:`tlutils.calibration.reliability_diagram`) (chapter 5)."""
        cal = self.calibration(bins)
        return cal.plot(ax, f"ECE {cal.ece:.3f} at temperature {self.temperature:.3g}")

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


def _relative(files: list[str]) -> tuple[str, list[str]]:
    """The folder the files share and their paths under it (``""`` and the files as
    they are when they share none), so that long paths do not fill the terminal."""
    parents = [os.path.dirname(f) for f in files]
    try:
        root = os.path.commonpath(parents) if all(parents) else ""
    except ValueError:  # absolute and relative paths mixed
        root = ""
    if not root:
        return "", list(files)
    return root, [os.path.relpath(f, root) for f in files]


def confusion_lines(
    matrix: np.ndarray, classes: list[str], width: int = REPORT_WIDTH
) -> list[str]:
    """A confusion matrix as text lines that fit ``width`` columns (chapter 5).

    Full class names label rows and columns when they fit; otherwise the columns are
    headed by abbreviations (the shortest unique prefixes that fit, or numbers), the
    rows keep the full names if there is room, and a key below lists what each
    abbreviation stands for.
    """
    matrix = np.asarray(matrix)
    k, digits = len(classes), len(str(int(matrix.max(initial=0))))
    cell = max(7, *(len(c) for c in classes), digits) + 1
    if cell * (k + 1) <= width:  # full names fit: one width for all columns
        head = " " * cell + "".join(f"{c:>{cell}}" for c in classes)
        rows = [
            f"{c:<{cell}}" + "".join(f"{v:>{cell}}" for v in row)
            for c, row in zip(classes, matrix, strict=True)
        ]
        return [head, *rows]
    names, codes, cell = _abbreviated(classes, digits, width)
    label = max(len(n) for n in names) + 1
    head = " " * label + "".join(f"{c:>{cell}}" for c in codes)
    rows = [
        f"{n:<{label}}" + "".join(f"{v:>{cell}}" for v in row)
        for n, row in zip(names, matrix, strict=True)
    ]
    pairs = [f"{c} = {n}" for c, n in zip(codes, classes, strict=True) if c != n]
    return [head, *rows, *_key_lines(pairs, width)]


def _key_lines(pairs: list[str], width: int) -> list[str]:
    """``key: a = b; c = d ...`` in lines of at most ``width`` columns, never breaking
    a pair."""
    lines = []
    for pair in pairs:
        if lines and len(lines[-1]) + 2 + len(pair) <= width:
            lines[-1] += "; " + pair
        else:
            lines.append(("key: " if not lines else "     ") + pair)
    return lines


def _abbreviated(
    classes: list[str], digits: int, width: int
) -> tuple[list[str], list[str], int]:
    """Row names, column codes and the cell width of a confusion matrix in ``width``
    columns: full row names with codes of 8 to 4 characters if they fit, else codes on
    both axes, as long as fit (at least 2)."""
    from .errors import short_names

    longest, k = max(len(c) for c in classes), len(classes)
    options = [(True, n) for n in range(8, 3, -1)] + [
        (False, n) for n in range(8, 1, -1)
    ]
    for full, size in options:
        codes = short_names(classes, size)
        cell = max(digits, *(len(c) for c in codes)) + 1
        label = longest if full else max(len(c) for c in codes)
        if label + 1 + cell * k <= width:
            return (classes if full else codes), codes, cell
    return codes, codes, cell  # too many classes for the width: the shortest codes


def evaluate_folder(
    trained: TrainedModel | str | Path,
    folder: str | Path,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
    temperature: float | None = None,
) -> Evaluation:
    """Score a trained model on a labelled folder: one sub-folder per class (chapter 5).

    The sub-folders' names must be among the model's classes (a folder may hold fewer);
    a folder split into ``train/`` and ``val/`` is scored on ``val/``. Images in nested
    sub-folders count for their class; unreadable files are skipped with a warning. The
    logits are divided by ``temperature`` (default: the model's, see
    :func:`model_temperature`); the raw logits are kept in the result.
    """
    trained = _as_trained(trained)
    t = model_temperature(trained, temperature)
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
    label = {}
    for name in names:
        if image_files(root / name):
            for file in _image_files(root / name):
                label[file] = trained.classes.index(name)
    files, logits = _logits(trained, list(label), batch_size, device, progress)
    if not files:
        raise ValueError(f"{root} holds no readable images in its class folders.")
    true = [label[f] for f in files]
    result = Evaluation(
        list(trained.classes), [str(f) for f in files], true, [], [], [],
        logits.tolist(), 1.0,
    )  # fmt: skip
    return result.with_temperature(t)
