"""Calibration: does a model's confidence match how often it is right? (chapter 5)

A classifier's top probability reads like a confidence: of the images it predicts with
probability 0.9, nine in ten should be right. :func:`expected_calibration_error`
measures how far that is from true (Guo et al. 2017): the images are put in equal-width
bins of confidence, and the gap between each bin's mean confidence and its accuracy is
averaged, weighted by the bin's share of images. :func:`reliability_diagram` draws the
bins.

*Temperature scaling* (Guo et al. 2017) divides the logits by one number ``T > 0``
before the softmax: ``T > 1`` softens overconfident probabilities, ``T < 1`` sharpens
underconfident ones, and the top class, hence the accuracy, never changes.
:func:`fit_temperature` chooses ``T`` on validation logits by minimising their negative
log-likelihood; :mod:`tlutils.inference` divides by the model's ``temperature`` when it
predicts. Fit ``T`` on images that are not the ones you report ECE on.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Calibration",
    "calibration_bins",
    "expected_calibration_error",
    "softmax",
    "negative_log_likelihood",
    "fit_temperature",
    "reliability_diagram",
    "TEMPERATURE_BOUNDS",
]

TEMPERATURE_BOUNDS = (0.05, 20.0)
"""The range :func:`fit_temperature` searches: from 20 times sharper to 20 times
softer."""


def _labels(labels, n: int, k: int) -> np.ndarray:
    """Integer class indices ``[n]`` in ``0..k-1``, or an error that says what is
    wrong."""
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"labels must be one class index per image ({n} images); got shape "
            f"{y.shape}."
        )
    if n and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k):
        raise ValueError(
            f"labels must be integer class indices from 0 to {k - 1} (the columns); "
            f"got values from {y.min()} to {y.max()} ({y.dtype})."
        )
    return y.astype(np.int64)


def _matrix(values, what: str) -> np.ndarray:
    """A finite float array ``[images, classes]``: at least one image, 2 classes."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] < 2:
        raise ValueError(
            f"{what} must be a 2-D array [images, classes] with at least one image and "
            f"two classes; got shape {x.shape}."
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values; check the model.")
    return x


def _probabilities(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """Checked probabilities ``[n, k]`` (rows summing to 1) and labels ``[n]``."""
    p = _matrix(probs, "probabilities")
    if p.min() < -1e-6 or p.max() > 1 + 1e-6 or np.abs(p.sum(1) - 1).max() > 1e-3:
        raise ValueError(
            "probabilities must lie in [0, 1] and each row must sum to 1; these look "
            "like logits: pass softmax(logits) (tlutils.calibration.softmax)."
        )
    return p, _labels(labels, len(p), p.shape[1])


@dataclass(frozen=True)
class Calibration:
    """Confidence against accuracy in equal-width bins of confidence (chapter 5).

    ``counts``, ``confidence`` (mean top probability) and ``accuracy`` have one entry
    per bin; empty bins hold NaN. ``ece`` is the expected calibration error: the mean
    gap ``|accuracy - confidence|`` weighted by each bin's share of the images.
    """

    edges: np.ndarray  # bins + 1 edges from 0 to 1
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error, from 0 (calibrated) to 1."""
        full = self.counts > 0
        gaps = np.abs(self.accuracy[full] - self.confidence[full])
        return float((gaps * self.counts[full]).sum() / self.counts.sum())

    @property
    def images(self) -> int:
        """How many images were binned."""
        return int(self.counts.sum())

    @classmethod
    def from_confidence(cls, confidence, correct, bins: int = 15) -> Calibration:
        """Bin images by their top probability ``confidence`` and whether the top
        class was ``correct`` (chapter 5)."""
        conf = np.asarray(confidence, dtype=np.float64)
        right = np.asarray(correct, dtype=np.float64)
        if conf.ndim != 1 or conf.shape != right.shape or conf.size == 0:
            raise ValueError(
                "confidence and correct must be 1-D and of the same, non-zero length; "
                f"got shapes {conf.shape} and {right.shape}."
            )
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive integer such as 15; got {bins}.")
        if conf.min() < 0 or conf.max() > 1 + 1e-9:
            raise ValueError("confidence must be a probability, from 0 to 1.")
        # Bin b holds (b/bins, (b+1)/bins]; a confidence of exactly 0 goes to bin 0.
        which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
        counts = np.bincount(which, minlength=bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_conf = np.bincount(which, conf, minlength=bins) / counts
            accuracy = np.bincount(which, right, minlength=bins) / counts
        return cls(np.linspace(0, 1, bins + 1), counts, mean_conf, accuracy)

    def plot(self, ax=None, title: str | None = None):
        """The reliability diagram of these bins (:func:`reliability_diagram`)."""
        return _draw(self, ax, title)


def calibration_bins(probs, labels, bins: int = 15) -> Calibration:
    """Bin images by top probability: counts, mean confidence and accuracy per bin
    (chapter 5). ``probs`` is ``[images, classes]`` (softmax outputs), ``labels`` the
    true class index of each image."""
    p, y = _probabilities(probs, labels)
    return Calibration.from_confidence(p.max(1), p.argmax(1) == y, bins)


def expected_calibration_error(probs, labels, bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) of probabilities ``[images,
    classes]`` against true labels, with ``bins`` equal-width bins of the top
    probability: 0 when every bin's confidence equals its accuracy (chapter 5)."""
    return calibration_bins(probs, labels, bins).ece


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(
            f"A temperature must be a positive number (1.0 changes nothing); got "
            f"{temperature!r}."
        )
    return t


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """Probabilities ``softmax(logits / temperature)``, float64 (chapter 5)."""
    z = torch.as_tensor(_matrix(logits, "logits"))
    return (z / _check_temperature(temperature)).softmax(1).numpy()


def _nll(z: torch.Tensor, y: torch.Tensor, temperature: float) -> float:
    return float(torch.nn.functional.cross_entropy(z / temperature, y))


def _logits_and_labels(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    z = _matrix(logits, "logits")
    rows_sum_to_one = np.abs(z.sum(1) - 1).max() < 1e-6
    if len(z) > 1 and z.min() >= 0 and z.max() <= 1 and rows_sum_to_one:
        raise ValueError(
            "These look like probabilities (rows in [0, 1] summing to 1), not logits: "
            "pass the model's outputs before the softmax."
        )
    y = _labels(labels, len(z), z.shape[1])
    return torch.as_tensor(z), torch.as_tensor(y)


def negative_log_likelihood(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (cross-entropy, in nats) of ``logits / temperature``
    against the true labels: the loss temperature scaling minimises (chapter 5)."""
    z, y = _logits_and_labels(logits, labels)
    return _nll(z, y, _check_temperature(temperature))


def fit_temperature(
    logits, labels, bounds: tuple[float, float] = TEMPERATURE_BOUNDS
) -> float:
    """The temperature ``T`` that minimises the negative log-likelihood of
    ``logits / T`` on held-out (validation) images (chapter 5).

    The loss is convex in ``1 / T``, so it has one minimum along ``log T``: a
    golden-section search on ``log T`` within ``bounds`` finds it without step sizes to
    tune. A minimum on a bound (for example every image right by a wide margin, which
    pushes ``T`` to 0) is returned with a warning. The result never has a higher loss
    than ``T = 1``.
    """
    z, y = _logits_and_labels(logits, labels)
    lo, hi = (_check_temperature(b) for b in bounds)
    if not lo < 1.0 < hi:
        raise ValueError(
            f"bounds must enclose 1.0, as (0.05, 20.0) does; got {bounds}."
        )
    a, b = math.log(lo), math.log(hi)
    golden = (math.sqrt(5) - 1) / 2
    c, d = b - golden * (b - a), a + golden * (b - a)
    fc, fd = _nll(z, y, math.exp(c)), _nll(z, y, math.exp(d))
    while b - a > 1e-6:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - golden * (b - a)
            fc = _nll(z, y, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + golden * (b - a)
            fd = _nll(z, y, math.exp(d))
    t = math.exp((a + b) / 2)
    if _nll(z, y, t) > _nll(z, y, 1.0):
        return 1.0
    if t < lo * 1.001 or t > hi * 0.999:
        warnings.warn(
            f"The fitted temperature {t:.3g} lies on the search bound {bounds}: the "
            "validation images cannot pin it down (too few, or all right by a wide "
            "margin). Fit it on more held-out images.",
            stacklevel=2,
        )
    return t


def _draw(cal: Calibration, ax=None, title: str | None = None):
    """Bars of accuracy per confidence bin, the gap to the diagonal, counts below."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 4.2))
    else:
        fig = ax.figure
    left, width = cal.edges[:-1], np.diff(cal.edges)
    full = cal.counts > 0
    ax.bar(
        left[full], cal.accuracy[full], width[full], align="edge", color="C0",
        edgecolor="white", label="accuracy",
    )  # fmt: skip
    gap = cal.confidence[full] - cal.accuracy[full]
    ax.bar(
        left[full], gap, width[full], bottom=cal.accuracy[full], align="edge",
        color="C3", alpha=0.35, edgecolor="C3", label="gap to confidence",
    )  # fmt: skip
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for x, w, n in zip(left[full], width[full], cal.counts[full], strict=True):
        ax.text(x + w / 2, 0.01, str(n), ha="center", va="bottom", fontsize=6)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)")
    ax.set(ylabel="accuracy")
    ax.set_title(title or f"ECE {cal.ece:.3f} ({cal.images} images)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def reliability_diagram(probs, labels, bins: int = 15, ax=None, title=None):
    """The reliability diagram (chapter 5): per confidence bin, a bar of its accuracy,
    the gap to its mean confidence in red, the number of images at the bottom, the
    diagonal of a calibrated model and the ECE in the title. Draws on ``ax`` if given;
    returns the figure."""
    return _draw(calibration_bins(probs, labels, bins), ax, title)
