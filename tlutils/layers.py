"""Looking inside a pretrained network: first-layer filters, feature maps, features in 2-D (chapter 2).

The feature maps themselves come from :func:`tlutils.stages.stage_outputs`. The functions
build on scikit-learn (PCA, t-SNE) and matplotlib; they add only the plumbing a chapter needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

__all__ = ["plot_filters", "plot_feature_maps", "embed_2d", "plot_embeddings"]


def plot_filters(conv: nn.Conv2d, ncols: int = 8, size: float = 0.9) -> plt.Figure:
    """The filters of a convolution on RGB input as small colour images, each scaled to its own range (chapter 2)."""
    if not isinstance(conv, nn.Conv2d) or conv.in_channels != 3:
        raise ValueError(
            "plot_filters needs the first convolution of a network: an nn.Conv2d with 3 input channels."
        )
    weights = conv.weight.detach().cpu().float()  # (out, 3, k, k)
    low = weights.amin(dim=(1, 2, 3), keepdim=True)
    high = weights.amax(dim=(1, 2, 3), keepdim=True)
    scaled = (
        ((weights - low) / (high - low).clamp_min(1e-8)).permute(0, 2, 3, 1).numpy()
    )
    nrows = (len(scaled) + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image in zip(axes.flat, scaled, strict=False):
        ax.imshow(image, interpolation="nearest")
    fig.tight_layout()
    return fig


def plot_feature_maps(
    maps: dict[str, torch.Tensor], n: int = 6, size: float = 1.6
) -> plt.Figure:
    """One row per stage: the ``n`` channels with the highest mean activation for one image (chapter 2).

    ``maps`` maps a row title to a ``(C, H, W)`` or ``(1, C, H, W)`` tensor.
    """
    if not maps:
        raise ValueError("No feature maps to show.")
    fig, axes = plt.subplots(
        len(maps), n, figsize=(size * n, size * len(maps) + 0.2), squeeze=False
    )
    for row, (title, fmap) in zip(axes, maps.items(), strict=True):
        fmap = fmap.detach().cpu().float()
        if fmap.ndim == 4:
            fmap = fmap[0]
        if fmap.ndim != 3:
            raise ValueError(
                f"Feature map {title!r} must be (C, H, W), got shape {tuple(fmap.shape)}."
            )
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


def embed_2d(
    features: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0
) -> np.ndarray:
    """Standardise features and map them to 2-D with scikit-learn's PCA or t-SNE (chapter 2)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    x = (
        features.detach().cpu().numpy()
        if isinstance(features, torch.Tensor)
        else np.asarray(features)
    )
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"features must be (N, D) with N >= 3, got shape {x.shape}.")
    x = StandardScaler().fit_transform(x.astype(np.float64))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        return TSNE(
            n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), random_state=seed
        ).fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}.")


def plot_embeddings(
    points: dict[str, np.ndarray],
    labels: Sequence[int] | torch.Tensor,
    classes: Sequence[str],
    size: float = 4.0,
) -> plt.Figure:
    """Side-by-side scatter plots of 2-D points coloured by class, one panel per entry of ``points`` (chapter 2)."""
    labels = np.asarray(labels)
    fig, axes = plt.subplots(
        1, len(points), figsize=(size * len(points), size), squeeze=False
    )
    for ax, (title, xy) in zip(axes[0], points.items(), strict=True):
        if len(xy) != len(labels):
            raise ValueError(
                f"{title!r} has {len(xy)} points but there are {len(labels)} labels."
            )
        for index, name in enumerate(classes):
            mask = labels == index
            ax.scatter(
                xy[mask, 0], xy[mask, 1], s=10, alpha=0.7, label=name, color=f"C{index}"
            )
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig
