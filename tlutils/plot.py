"""Figures used throughout the course: image grids, training curves, confusion matrices,
and the forest plot of a chapter's verdicts."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from sklearn.metrics import ConfusionMatrixDisplay

from .train import History
from .verdict import OUTCOMES, Verdict

__all__ = [
    "show_images",
    "plot_history",
    "plot_runs",
    "plot_confusion_matrix",
    "plot_verdicts",
]


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
    """Show images (PIL, arrays, or normalised tensors undone with ``mean``/``std``)
    in a grid with titles (chapter 1).

    ``colors`` colours each title, e.g. green for a right and red for a wrong
    prediction.
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
    """Loss and accuracy per epoch; several runs (``{label: History}``) share the axes
    (chapters 2-4)."""
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
    """A confusion matrix with class names; ``normalize=True`` shows fractions of each
    true class (chapter 2)."""
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
    """Several runs per variant: mean over seeds (line) and min-max band, per metric
    (chapter 4).

    ``runs`` maps a variant's name to its histories (one per seed, of equal length).
    The four metrics are drawn two per row; ``mark_epoch`` draws a dotted line (e.g.
    where the warm-up ends).
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


#: How the forest plot draws each outcome: colour, marker, filled. Colour-blind-safe
#: colours (Okabe-Ito); the markers alone tell the outcomes apart too: right-pointing
#: for A, left-pointing for B, hollow for "slightly", a diamond for equivalent, a
#: hollow circle for inconclusive.
OUTCOME_STYLE: dict[str, tuple[str, str, bool]] = {
    "A better": ("#0072B2", ">", True),
    "A slightly better": ("#0072B2", ">", False),
    "equivalent": ("#009E73", "D", True),
    "B slightly better": ("#D55E00", "<", False),
    "B better": ("#D55E00", "<", True),
    "inconclusive": ("#555555", "o", False),
}
_BAND = "#999999"
_LIGHT = 0.5  # alpha of an exploratory comparison


def _outcome_words(margin: float) -> dict[str, str]:
    """The legend's words for each outcome: what its interval looks like."""
    m = f"{100 * margin:g}"
    return {
        "A better": f"A better: bar above 0, reaching +{m}",
        "A slightly better": f"A slightly better: bar above 0, inside +{m}",
        "equivalent": f"equivalent: bar includes 0, inside ±{m}",
        "B slightly better": f"B slightly better: bar below 0, inside -{m}",
        "B better": f"B better: bar below 0, reaching -{m}",
        "inconclusive": f"inconclusive: bar includes 0, leaves ±{m}",
    }


def _band_margin(verdicts: Sequence[Verdict], margin: float | None) -> float:
    """The margin the band shows: the verdicts' own, which must agree with
    ``margin``."""
    margins = {v.margin for v in verdicts}
    if margin is not None:
        margins.add(margin)
    if len(margins) != 1:
        raise ValueError(
            f"The verdicts and the band need one margin; got {sorted(margins)}."
        )
    return margins.pop()


def _is_primary(a: str, b: str, primary: Collection) -> bool:
    """A row is primary when ``primary`` names it as ``"A vs B"`` or ``(A, B)``."""
    return f"{a} vs {b}" in primary or (a, b) in primary


def _order_rows(
    rows: Sequence[tuple[str, str, Verdict]], primary: Collection | None
) -> tuple[list[tuple[str, str, Verdict]], list[tuple[str, str, Verdict]]]:
    """The primary rows and the exploratory ones, each in the order given."""
    primary = primary or ()
    named = {f"{a} vs {b}" for a, b, _ in rows} | {(a, b) for a, b, _ in rows}
    unknown = [p for p in primary if p not in named]
    if unknown:
        raise ValueError(f"primary names comparisons that are not rows: {unknown}.")
    first = [r for r in rows if _is_primary(r[0], r[1], primary)]
    rest = [r for r in rows if not _is_primary(r[0], r[1], primary)]
    return first, rest


def _draw_row(ax: plt.Axes, y: float, label: str, v: Verdict, primary: bool) -> None:
    """One comparison: its 95% interval as a bar, its mean difference as a marker."""
    color, marker, filled = OUTCOME_STYLE[v.verdict]
    alpha = 1.0 if primary else _LIGHT
    ax.plot(
        [100 * v.low, 100 * v.high],
        [y, y],
        color=color,
        lw=2.4 if primary else 1.6,
        marker="|",
        markersize=8,
        alpha=alpha,
        solid_capstyle="butt",
        gid=f"interval: {label}",
    )
    ax.plot(
        [100 * v.difference],
        [y],
        linestyle="none",
        marker=marker,
        markersize=9 if primary else 7.5,
        markeredgewidth=1.6,
        markeredgecolor=color,
        markerfacecolor=color if filled else "white",
        alpha=alpha,
        zorder=3,
        gid=f"estimate: {label}",
    )


def _outcome_handle(name: str, words: str) -> Line2D:
    """A legend entry for one outcome: its marker on a short bar, in its colour."""
    color, marker, filled = OUTCOME_STYLE[name]
    return Line2D(
        [],
        [],
        color=color,
        marker=marker,
        markersize=8,
        markeredgewidth=1.5,
        markerfacecolor=color if filled else "white",
        lw=2,
        label=words,
    )


def _legend_handles(margin: float, primary: bool) -> list:
    """Each outcome, the band, and bold = primary: A's outcomes in the first of two
    columns, B's in the second (a legend fills its columns top to bottom)."""
    words = _outcome_words(margin)
    handle = {name: _outcome_handle(name, words[name]) for name in OUTCOMES}
    number = f"{100 * margin:g}"
    band = f"±{number} point{'' if number == '1' else 's'}: the margin"
    handles = [handle[name] for name in OUTCOMES[:3]] + [handle["inconclusive"]]
    handles += [handle["B better"], handle["B slightly better"]]
    handles.append(Patch(facecolor=_BAND, alpha=0.25, label=band))
    if primary:
        label = "bold: primary; pale: exploratory"
        handles.append(Line2D([], [], color="black", lw=2.4, label=label))
    return handles


def _right_words(v: Verdict) -> str:
    """The right-hand column: the interval in points and the outcome for A."""
    return f"{100 * v.low:+.1f} to {100 * v.high:+.1f}  {v.short()}"


def _x_limits(verdicts: Sequence[Verdict], margin: float) -> tuple[float, float]:
    """Points on the x axis: every interval and the band, with some room."""
    low = min([100 * v.low for v in verdicts] + [-100 * margin])
    high = max([100 * v.high for v in verdicts] + [100 * margin])
    pad = 0.06 * (high - low)
    return low - pad, high + pad


def _draw_band(ax: plt.Axes, margin: float) -> None:
    """The shaded ``±margin`` band (in points, the full height) and the line at 0."""
    ax.add_patch(
        Rectangle(
            (-100 * margin, 0),
            200 * margin,
            1,
            transform=ax.get_xaxis_transform(),
            facecolor=_BAND,
            alpha=0.25,
            linewidth=0,
            zorder=0,
            gid="margin band",
        )
    )
    ax.axvline(0, color="black", lw=0.9, zorder=1, gid="zero")


def _label_rows(ax: plt.Axes, ordered: list) -> None:
    """Row names on the left, interval and outcome on the right: bold for primary
    rows, grey for exploratory ones; the first row at the top."""
    n = len(ordered)
    ax.set_yticks(range(n), [f"{a} vs {b}" for (a, b, _), _ in ordered])
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(n), [_right_words(v) for (_, _, v), _ in ordered])
    right.tick_params(length=0, labelsize=8.5)
    for axis in (ax, right):
        for tick, (_, bold) in zip(axis.get_yticklabels(), ordered, strict=True):
            tick.set_fontweight("bold" if bold else "normal")
            tick.set_color("black" if bold else "#666666")
    ax.set_ylim(n - 0.4, -0.6)
    ax.grid(axis="y", color="0.9", lw=0.6)
    ax.set_axisbelow(True)


def plot_verdicts(
    rows: Sequence[tuple[str, str, Verdict]],
    margin: float | None = None,
    title: str | None = None,
    primary: Collection[str | tuple[str, str]] | None = None,
) -> plt.Figure:
    """A forest plot of a chapter's comparisons by the verdict rule (chapters 2-5).

    ``rows`` holds ``(arm A, arm B, verdict)`` as for
    :func:`tlutils.verdict.verdict_table`. Each comparison is one row, ``"A vs B"``: its
    mean difference ``A - B`` in points (marker) and its 95% interval (bar), against the
    shaded ``±margin`` band and a line at 0. Colour and marker shape both name the
    outcome. Rows named in ``primary`` (``"A vs B"`` or ``(A, B)``) come first, in bold;
    the others are exploratory, drawn pale. The right-hand column prints each interval
    and its outcome for A. ``margin`` defaults to the verdicts' own (they must agree).
    """
    if not rows:
        raise ValueError("No comparisons to plot.")
    band = _band_margin([v for _, _, v in rows], margin)
    first, rest = _order_rows(rows, primary)
    ordered = [(r, True) for r in first] + [(r, not first) for r in rest]
    fig, ax = plt.subplots(figsize=(9, 2.4 + 0.3 * len(ordered)), layout="constrained")
    _draw_band(ax, band)
    for y, ((a, b, v), bold) in enumerate(ordered):
        _draw_row(ax, y, f"{a} vs {b}", v, bold)
    _label_rows(ax, ordered)
    if first and rest:
        ax.axhline(len(first) - 0.5, color="#888888", lw=0.8, ls="--")
    ax.set_xlim(*_x_limits([v for _, _, v in rows], band))
    ax.set_xlabel("A minus B, accuracy points (marker: mean; bar: 95% interval)")
    if title:
        ax.set_title(title, loc="left", fontweight="bold")
    fig.legend(
        handles=_legend_handles(band, bool(first and rest)),
        loc="outside lower center",
        ncol=2,
        fontsize=8.5,
        frameon=False,
    )
    return fig
