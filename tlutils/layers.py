"""Looking inside a pretrained network: stage outputs, first-layer filters, feature maps in 2-D (chapter 2).

The functions build on timm (``features_only``), torchvision (``create_feature_extractor``),
scikit-learn (PCA, t-SNE) and matplotlib; they add only the plumbing a chapter needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

__all__ = ["stage_outputs", "plot_filters", "plot_feature_maps", "embed_2d", "plot_embeddings", "train_for_seconds"]


@torch.no_grad()
def stage_outputs(model: nn.Module, images: torch.Tensor, stages: Sequence[int] | Sequence[str]) -> list[torch.Tensor]:
    """The feature maps a model computes at the given stages for a batch of ``images`` (chapter 2).

    ``stages`` are either indices into a timm model's ``feature_info`` (its stage outputs,
    as ``timm.create_model(..., features_only=True)`` would return them) or module names such
    as ``"layer1"`` for a torchvision model (via ``create_feature_extractor``). The model's
    weights are shared, not copied, and it is put in eval mode.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (N, C, H, W), got shape {tuple(images.shape)}.")
    if len(stages) == 0:
        raise ValueError("Name at least one stage.")
    model.eval()
    if all(isinstance(s, int) for s in stages):
        if not hasattr(model, "feature_info"):
            raise TypeError(
                f"{type(model).__name__} has no feature_info, so stages cannot be given by number; "
                "pass module names such as 'layer1' instead."
            )
        from timm.models import FeatureListNet

        count = len(model.feature_info)
        bad = [s for s in stages if not -count <= s < count]
        if bad:
            raise ValueError(f"Stage indices {bad} out of range: the model has {count} stages (0..{count - 1}).")
        wrapper = FeatureListNet(model, out_indices=tuple(s % count for s in stages), flatten_sequential=True)
        return list(wrapper(images))
    if all(isinstance(s, str) for s in stages):
        from torchvision.models.feature_extraction import create_feature_extractor

        names = {name for name, _ in model.named_modules()}
        missing = [s for s in stages if s not in names]
        if missing:
            raise ValueError(f"The model has no modules named {missing}; see print(model) for the names.")
        extractor = create_feature_extractor(model, return_nodes={s: s for s in stages})
        out = extractor(images)
        return [out[s] for s in stages]
    raise TypeError("stages must be all integers (timm feature_info indices) or all module names.")


def plot_filters(conv: nn.Conv2d, ncols: int = 8, size: float = 0.9) -> plt.Figure:
    """The filters of a convolution on RGB input as small colour images, each scaled to its own range (chapter 2)."""
    if not isinstance(conv, nn.Conv2d) or conv.in_channels != 3:
        raise ValueError("plot_filters needs the first convolution of a network: an nn.Conv2d with 3 input channels.")
    weights = conv.weight.detach().cpu().float()  # (out, 3, k, k)
    low = weights.amin(dim=(1, 2, 3), keepdim=True)
    high = weights.amax(dim=(1, 2, 3), keepdim=True)
    scaled = ((weights - low) / (high - low).clamp_min(1e-8)).permute(0, 2, 3, 1).numpy()
    nrows = (len(scaled) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image in zip(axes.flat, scaled, strict=False):
        ax.imshow(image, interpolation="nearest")
    fig.tight_layout()
    return fig


def plot_feature_maps(maps: dict[str, torch.Tensor], n: int = 6, size: float = 1.6) -> plt.Figure:
    """One row per stage: the ``n`` channels with the highest mean activation for one image (chapter 2).

    ``maps`` maps a row title to a ``(C, H, W)`` or ``(1, C, H, W)`` tensor.
    """
    if not maps:
        raise ValueError("No feature maps to show.")
    fig, axes = plt.subplots(len(maps), n, figsize=(size * n, size * len(maps) + 0.2), squeeze=False)
    for row, (title, fmap) in zip(axes, maps.items(), strict=True):
        fmap = fmap.detach().cpu().float()
        if fmap.ndim == 4:
            fmap = fmap[0]
        if fmap.ndim != 3:
            raise ValueError(f"Feature map {title!r} must be (C, H, W), got shape {tuple(fmap.shape)}.")
        top = fmap.mean(dim=(1, 2)).argsort(descending=True)[:n]
        for ax, channel in zip(row, top.tolist(), strict=False):
            ax.imshow(fmap[channel].numpy(), cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row[len(top) :]:
            ax.axis("off")
        row[0].set_ylabel(f"{title}\n{tuple(fmap.shape)}", fontsize=8)
    fig.tight_layout()
    return fig


def embed_2d(features: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Standardise features and map them to 2-D with scikit-learn's PCA or t-SNE (chapter 2)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"features must be (N, D) with N >= 3, got shape {x.shape}.")
    x = StandardScaler().fit_transform(x.astype(np.float64))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        return TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), random_state=seed).fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}.")


def plot_embeddings(
    points: dict[str, np.ndarray], labels: Sequence[int] | torch.Tensor, classes: Sequence[str], size: float = 4.0
) -> plt.Figure:
    """Side-by-side scatter plots of 2-D points coloured by class, one panel per entry of ``points`` (chapter 2)."""
    labels = np.asarray(labels)
    fig, axes = plt.subplots(1, len(points), figsize=(size * len(points), size), squeeze=False)
    for ax, (title, xy) in zip(axes[0], points.items(), strict=True):
        if len(xy) != len(labels):
            raise ValueError(f"{title!r} has {len(xy)} points but there are {len(labels)} labels.")
        for index, name in enumerate(classes):
            mask = labels == index
            ax.scatter(xy[mask, 0], xy[mask, 1], s=10, alpha=0.7, label=name, color=f"C{index}")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def train_for_seconds(
    model: nn.Module,
    loader: Iterable,
    seconds: float,
    lr: float = 1e-3,
    device: torch.device | None = None,
    clock: Callable[[], float] = time.process_time,
) -> tuple[int, int]:
    """Train ``model`` with Adam until ``seconds`` of ``clock`` have passed; return ``(steps, epochs started)`` (chapter 2).

    The default clock, :func:`time.process_time`, counts the CPU seconds this process
    used, so other programs on the machine do not shrink the budget. On a GPU pass
    ``clock=time.perf_counter`` (wall time) instead.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}.")
    device = device or next(model.parameters()).device
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("Every parameter is frozen: nothing to train.")
    optimizer = torch.optim.Adam(params, lr=lr)
    start, steps, epochs = clock(), 0, 0
    while clock() - start < seconds:
        epochs += 1
        batches = 0
        for inputs, targets in loader:
            loss = nn.functional.cross_entropy(model(inputs.to(device)), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            batches += 1
            if clock() - start >= seconds:
                break
        if batches == 0:
            raise ValueError("The loader yielded no batches; is the dataset empty?")
    return steps, epochs
