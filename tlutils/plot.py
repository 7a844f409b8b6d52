"""Figures used throughout the course: image grids, training curves, confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.metrics import ConfusionMatrixDisplay

from .train import History

__all__ = ["show_images", "plot_history", "plot_runs", "plot_confusion_matrix"]


def _to_numpy_image(image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(
                -1, 1, 1
            )
            image = image.permute(1, 2, 0)
        return image.clamp(0, 1).numpy()
    return np.asarray(image)


def show_images(
    images: Sequence,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    colors: Sequence[str] | None = None,
    size: float = 2.5,
) -> plt.Figure:
    """Show images (PIL, arrays, or normalised tensors undone with ``mean``/``std``) in a grid with titles (chapter 1).

    ``colors`` colours each title, e.g. green for a right and red for a wrong prediction.
    """
    n = len(images)
    if n == 0:
        raise ValueError("No images to show.")
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows + 0.3 * nrows), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(_to_numpy_image(image, mean, std))
        if titles is not None:
            ax.set_title(titles[i], fontsize=9, color=colors[i] if colors else "black")
    fig.tight_layout()
    return fig


def plot_history(
    histories: History | dict[str, History], title: str | None = None
) -> plt.Figure:
    """Loss and accuracy per epoch; several runs (``{label: History}``) share the axes (chapters 2-4)."""
    if isinstance(histories, History):
        histories = {"": histories}
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    for i, (label, h) in enumerate(histories.items()):
        color = f"C{i}"
        prefix = f"{label} " if label else ""
        epochs = np.arange(1, len(h.train_loss) + 1)
        ax_loss.plot(epochs, h.train_loss, color=color, ls="--", label=f"{prefix}train")
        ax_acc.plot(epochs, h.train_acc, color=color, ls="--", label=f"{prefix}train")
        if h.val_loss:
            ax_loss.plot(epochs, h.val_loss, color=color, label=f"{prefix}val")
            ax_acc.plot(epochs, h.val_acc, color=color, label=f"{prefix}val")
    ax_loss.set(xlabel="epoch", ylabel="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy")
    ax_acc.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(
    y_true, y_pred, classes: Sequence[str], normalize: bool = False
) -> plt.Figure:
    """A confusion matrix with class names; ``normalize=True`` shows fractions of each true class (chapter 2)."""
    display = ConfusionMatrixDisplay.from_predictions(
        np.asarray(y_true),
        np.asarray(y_pred),
        labels=list(range(len(classes))),
        display_labels=classes,
        normalize="true" if normalize else None,
        xticks_rotation=45,
        colorbar=False,
        values_format=".2f" if normalize else "d",
    )
    display.figure_.tight_layout()
    return display.figure_


def plot_runs(
    runs: dict[str, Sequence[History]],
    colors: dict[str, str] | None = None,
    title: str = "",
    mark_epoch: float | None = None,
) -> plt.Figure:
    """Several runs per variant: mean over seeds (line) and min-max band, per metric (chapter 4).

    ``runs`` maps a variant's name to its histories (one per seed, of equal length). The
    four metrics are drawn two per row; ``mark_epoch`` draws a dotted line (e.g. where the
    warm-up ends).
    """
    metrics = [
        ("train_loss", "training loss"),
        ("val_loss", "validation loss"),
        ("train_acc", "training accuracy"),
        ("val_acc", "validation accuracy"),
    ]
    colors = colors or {name: f"C{i}" for i, name in enumerate(runs)}
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    for (metric, label), ax in zip(metrics, axes.flat, strict=True):
        for name, histories in runs.items():
            values = np.array([getattr(h, metric) for h in histories])
            epochs = np.arange(1, values.shape[1] + 1)
            ax.plot(
                epochs,
                values.mean(0),
                "o-",
                color=colors[name],
                label=name,
                markersize=3,
            )
            ax.fill_between(
                epochs, values.min(0), values.max(0), color=colors[name], alpha=0.2
            )
        if mark_epoch is not None:
            ax.axvline(mark_epoch, color="grey", linestyle=":")
        ax.set(xlabel="epoch", title=label)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
