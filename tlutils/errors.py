"""Error analysis in pictures: where the model fails, and what it was fed (chapter 5).

Numbers say how often a model is wrong; pictures say why. :func:`plot_confusion` shows
which classes are confused, as counts and as shares of each true class side by side
(a rare class's errors are invisible in counts); :func:`plot_worst_mistakes` shows the
images the model got most wrong, with their true and predicted classes and its
confidence (fastai's ``plot_top_losses``): a wrong label, an odd photo or a real
confusion is often obvious at a glance. :func:`show_batch` shows augmented training
images as the network receives them, so that a crop that cuts off the object or a
colour change that removes the cue is seen before training. :func:`save_error_figures`
writes the three figures of an evaluation to a folder (``tlutils evaluate --plot``).
:func:`occlusion_map` and :func:`plot_occlusion` show where the network looks: how much a
prediction drops when a part of the image is hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from .inference import Evaluation

__all__ = [
    "short_names",
    "image_grid",
    "plot_confusion",
    "plot_worst_mistakes",
    "show_batch",
    "save_error_figures",
    "occlusion_map",
    "plot_occlusion",
]


def short_names(names: Sequence[str], width: int = 12, ellipsis: str = "") -> list[str]:
    """Class names cut to at most ``width`` characters, still unique (chapter 5).

    A cut name ends with ``ellipsis`` (say ``"…"`` for a figure). Names that would
    collide keep their position number at the end (``"class1"``, ``"clas10"``); if they
    still collide, every name becomes its number (``"1"``, ``"2"``...).
    """
    names = [str(n) for n in names]
    width = max(width, len(str(len(names))), 1)
    cut = [
        n if len(n) <= width else n[: width - len(ellipsis)] + ellipsis for n in names
    ]
    seen = {c: cut.count(c) for c in cut}
    out = [
        c if seen[c] == 1 else n[: width - len(str(i + 1))] + str(i + 1)
        for i, (n, c) in enumerate(zip(names, cut, strict=True))
    ]
    return out if len(set(out)) == len(out) else [str(i + 1) for i in range(len(out))]


def _thumbnail(image, side: int = 256) -> np.ndarray:
    """A path, PIL image or array as an RGB array, its longer side at most ``side``."""
    from PIL import Image

    from .data import load_rgb

    if isinstance(image, (str, Path)):
        image = load_rgb(image)
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
        image.thumbnail((side, side))
        return np.asarray(image)
    return np.asarray(image)


def image_grid(
    images: Sequence,
    captions: Sequence[str],
    ncols: int = 4,
    colors: Sequence[str] | None = None,
    title: str | None = None,
    size: float = 2.6,
):
    """Images (paths, PIL images or RGB arrays; ``None`` leaves a cell empty) in a grid,
    each with its caption below a title line (chapter 5). Returns the figure."""
    import matplotlib.pyplot as plt

    if len(images) == 0:
        raise ValueError("No images to show.")
    if len(captions) != len(images):
        raise ValueError(
            f"Give one caption per image: {len(images)} images, {len(captions)} "
            "captions."
        )
    ncols = max(1, min(ncols, len(images)))
    nrows = -(-len(images) // ncols)
    lines = max(c.count("\n") + 1 for c in captions)
    fig, axes = plt.subplots(
        nrows, ncols, squeeze=False,
        figsize=(size * ncols, (size + 0.17 * lines) * nrows + (0.4 if title else 0)),
    )  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        ax = axes.flat[i]
        if image is not None:
            ax.imshow(_thumbnail(image))
        color = colors[i] if colors else "black"
        ax.set_title(caption, fontsize=8, color=color)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _check_predictions(y_true, y_pred, k: int) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 1 or t.shape != p.shape or t.size == 0:
        raise ValueError(
            "y_true and y_pred must be 1-D lists of class indices of the same, "
            f"non-zero length; got shapes {t.shape} and {p.shape}."
        )
    both = np.concatenate([t, p])
    if not np.issubdtype(both.dtype, np.integer) or both.min() < 0 or both.max() >= k:
        raise ValueError(
            f"Class indices must be integers from 0 to {k - 1} ({k} class names "
            "given); convert names to indices with classes.index(name)."
        )
    return t, p


def _matrix_panel(ax, values, names, title: str, fmt: str) -> None:
    """One confusion matrix on ``ax``: shaded cells with their values, named axes."""
    k = len(names)
    top = np.nanmax(values) if np.isfinite(values).any() else 1
    ax.imshow(values, cmap="Blues", vmin=0, vmax=max(top, 1e-9))
    if k <= 20:  # beyond, the numbers would not be legible: the shades remain
        for (r, c), v in np.ndenumerate(values):
            if np.isfinite(v):
                text = "0" if v == 0 else format(v, fmt)
                color = "white" if v > top / 2 else "black"
                size = 9 if k <= 8 else 7
                ax.text(
                    c, r, text, ha="center", va="center", color=color, fontsize=size
                )
    ax.set_xticks(range(k), names, rotation=90 if k > 12 else 45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)


def plot_confusion(y_true, y_pred, classes: Sequence[str], max_label: int = 14):
    """Confusion matrices side by side: counts, and shares of each true class (each row
    sums to 1), with class names cut to ``max_label`` characters and rotated
    (chapter 5).

    The shares show the errors of a small class that the counts hide. Rows of classes
    with no images are left blank. Returns the figure.
    """
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    k = len(classes)
    t, p = _check_predictions(y_true, y_pred, k)
    counts = confusion_matrix(t, p, labels=range(k))
    totals = counts.sum(1, keepdims=True)
    share = np.full(counts.shape, np.nan)
    np.divide(counts, totals, out=share, where=totals > 0)
    names = short_names(classes, max_label, "…")
    side = max(3.6, 0.42 * k + 1.8)
    fig, (left, right) = plt.subplots(1, 2, figsize=(2 * side + 0.5, side + 0.4))
    _matrix_panel(left, counts.astype(float), names, "counts", ".0f")
    _matrix_panel(
        right, share, names, "share of each true class\n(each row sums to 1)", ".2f"
    )
    fig.suptitle(f"Confusion on {len(t)} images (accuracy {np.mean(t == p):.3f})")
    fig.tight_layout()
    return fig


def plot_worst_mistakes(
    evaluation: Evaluation, n: int = 12, ncols: int = 4, size: float = 2.6
):
    """The ``n`` wrong predictions with the highest loss (the lowest probability for the
    true class), as images captioned with the true class, the predicted class and the
    model's confidence, and the file name (chapter 5). Like fastai's
    ``plot_top_losses``: look for wrong labels, odd images and real confusions. Returns
    the figure."""
    import matplotlib.pyplot as plt

    ev = evaluation
    wrong = [i for i, (t, p) in enumerate(zip(ev.true, ev.predicted)) if t != p]
    wrong.sort(key=lambda i: ev.true_probability[i])
    if not wrong:
        fig, ax = plt.subplots(figsize=(4, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"no mistakes on {len(ev.files)} images", ha="center")
        return fig
    names = short_names(ev.classes, 14, "…")
    chosen = wrong[:n]
    captions = [
        f"true {names[ev.true[i]]}, p {ev.true_probability[i]:.2f}\n"
        f"predicted {names[ev.predicted[i]]} {ev.confidence[i]:.2f}\n"
        f"{_short_file(ev.files[i])}"
        for i in chosen
    ]
    title = (
        f"The {len(chosen)} worst of {len(wrong)} mistakes on {len(ev.files)} images "
        "(lowest probability for the true class first)"
    )
    return image_grid(
        [ev.files[i] for i in chosen], captions, ncols, ["C3"] * len(chosen), title,
        size,
    )  # fmt: skip


def _short_file(file: str, width: int = 26) -> str:
    name = Path(file).name
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _normalize_of(dataset) -> tuple[Sequence[float], Sequence[float]] | None:
    """The ``mean`` and ``std`` of the Normalize step of a dataset's transform."""
    from torch.utils.data import Subset
    from torchvision import transforms as t
    from torchvision.transforms import v2

    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    todo = [getattr(dataset, "transform", None)]
    while todo:
        step = todo.pop()
        if isinstance(step, (t.Normalize, v2.Normalize)):
            return list(step.mean), list(step.std)
        todo += list(getattr(step, "transforms", None) or [])
    return None


def _steps(dataset) -> str:
    from torch.utils.data import Subset

    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    transform = getattr(dataset, "transform", None)
    steps = getattr(transform, "transforms", None) or ([transform] if transform else [])
    return ", ".join(type(s).__name__ for s in steps) or "no transform"


def show_batch(
    dataset,
    n: int = 8,
    ncols: int = 4,
    seed: int = 0,
    same_image: bool = False,
    size: float = 2.2,
):
    """``n`` training images as the network receives them, after the dataset's
    transform (the training augmentation) and undoing its normalisation, captioned with
    their class (chapter 5). ``same_image=True`` draws one image ``n`` times to show the
    spread of the augmentation. The draws are seeded and leave the global random state
    as it was. Returns the figure."""
    from .data import classes_of

    if len(dataset) == 0:
        raise ValueError("The dataset is empty: there is nothing to show.")
    n = min(n, len(dataset)) if not same_image else n
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=1 if same_image else n, replace=False)
    picks = [int(picks[0])] * n if same_image else [int(i) for i in picks]
    try:
        classes = classes_of(dataset)
    except (AttributeError, TypeError):
        classes = None
    mean, std = _normalize_of(dataset) or ([0.0] * 3, [1.0] * 3)
    images, captions = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for j, i in enumerate(picks):
            image, label = dataset[i]
            images.append(_unnormalize(image, mean, std))
            name = classes[label] if classes else str(label)
            captions.append(f"{name} (draw {j + 1})" if same_image else f"{name} #{i}")
    title = f"What training feeds the network ({_steps(dataset)})"
    return image_grid(images, captions, ncols, title=title, size=size)


def _unnormalize(image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised ``[C, H, W]`` tensor back to an RGB array in [0, 1]."""
    if not isinstance(image, torch.Tensor):
        return _thumbnail(image)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"show_batch needs images as [channels, height, width] tensors; got "
            f"{tuple(image.shape)}. Give the dataset a transform that ends with "
            "ToTensor and Normalize (tl.create_transform(config, train=True))."
        )
    x = image.detach().cpu().float()
    x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def save_error_figures(
    evaluation: Evaluation,
    folder: str | Path,
    n_mistakes: int = 12,
    bins: int = 15,
    dpi: int = 120,
) -> dict[str, Path]:
    """Write an evaluation's figures to ``folder`` (created if needed): the confusion
    matrices (``confusion.png``), the worst mistakes (``mistakes.png``) and the
    reliability diagram (``reliability.png``); returns ``{name: path}`` (chapter 5)."""
    import matplotlib.pyplot as plt

    out = Path(folder).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(
            f"{out} is a file; give a folder for the figures (it is created if needed)."
        )
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "confusion": evaluation.plot_confusion(),
        "mistakes": evaluation.plot_mistakes(n=n_mistakes),
        "reliability": evaluation.reliability_diagram(bins),
    }
    paths = {}
    for name, fig in figures.items():
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=dpi)
        plt.close(fig)
    return paths


@torch.no_grad()
def occlusion_map(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: int,
    patch: int | None = None,
    stride: int | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Where the network looks (chapter 5): how much the probability of class
    ``target`` drops when a square of the image is hidden (Zeiler and Fergus 2014).

    ``image`` is one preprocessed image ``[3, H, W]``; a ``patch``-sized square (default:
    an eighth of the side) slides over it by ``stride`` (half a patch) and is set to
    zero, the normalised mean. Returns a map ``[H, W]``: for each pixel the mean drop
    in probability over the squares that hid it (positive: the evidence was there).
    Works for any classifier, a cut body included; the model runs where it is.
    """
    from .train import model_device

    if image.ndim != 3:
        raise ValueError(f"Give one image [3, H, W]; got shape {tuple(image.shape)}.")
    _, h, w = image.shape
    patch = patch or max(1, min(h, w) // 8)
    stride = stride or max(1, patch // 2)
    device = model_device(model)
    model = model.eval()
    x = image.to(device)
    base = model(x[None]).float().softmax(1)[0, target]
    spots = [
        (top, left)
        for top in range(0, max(1, h - patch + 1), stride)
        for left in range(0, max(1, w - patch + 1), stride)
    ]
    drop = torch.zeros(h, w)
    count = torch.zeros(h, w)
    for i in range(0, len(spots), batch_size):
        chunk = spots[i : i + batch_size]
        hidden = x.repeat(len(chunk), 1, 1, 1)
        for j, (top, left) in enumerate(chunk):
            hidden[j, :, top : top + patch, left : left + patch] = 0
        p = model(hidden).float().softmax(1)[:, target].cpu()
        for j, (top, left) in enumerate(chunk):
            drop[top : top + patch, left : left + patch] += base.cpu() - p[j]
            count[top : top + patch, left : left + patch] += 1
    return drop / count.clamp_min(1)


def plot_occlusion(trained, files: Sequence[str | Path], ncols: int = 4):
    """A few images with their occlusion maps over them (chapter 5): each predicted
    class and its probability above, bright where hiding the image lowered that
    probability most. ``trained`` is a :class:`~tlutils.checkpoint.TrainedModel`."""
    import matplotlib.pyplot as plt

    from .data import load_rgb
    from .train import model_device

    if not files:
        raise ValueError("Give at least one image file.")
    transform = trained.transform()
    ncols = max(1, min(ncols, len(files)))
    nrows = -(-len(files) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, squeeze=False, figsize=(2.8 * ncols, 3.0 * nrows)
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, file in zip(axes.flat, files):
        x = transform(load_rgb(file))
        with torch.no_grad():
            device = model_device(trained.model)
            probs = trained.model.eval()(x[None].to(device)).softmax(1)[0]
        k = int(probs.argmax())
        heat = occlusion_map(trained.model, x, k)
        shown = x.permute(1, 2, 0).numpy()
        shown = (shown - shown.min()) / max(1e-8, float(shown.max() - shown.min()))
        ax.imshow(shown)
        ax.imshow(heat.clamp_min(0).numpy(), cmap="inferno", alpha=0.5)
        ax.set_title(f"{trained.classes[k]} {float(probs[k]):.2f}\n{Path(file).name[:24]}",
                     fontsize=8)  # fmt: skip
    fig.suptitle("Where the network looks: bright = hiding it lowers the prediction")
    fig.tight_layout()
    return fig
