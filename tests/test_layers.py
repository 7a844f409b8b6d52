"""Tests for tlutils.layers (chapter 2)."""

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

import tlutils as tl
from tlutils import layers

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def lite0_random():
    torch.manual_seed(0)
    return tl.create_model(pretrained=False).eval()


def test_plot_filters(lite0_random):
    fig = layers.plot_filters(lite0_random.conv_stem, ncols=8)
    assert sum(1 for ax in fig.axes if ax.images) == 32
    image = next(ax for ax in fig.axes if ax.images).images[0].get_array()
    assert image.shape == (3, 3, 3) and image.min() >= 0 and image.max() <= 1
    with pytest.raises(ValueError, match="3 input channels"):
        layers.plot_filters(nn.Conv2d(8, 4, 3))


def test_plot_feature_maps_picks_most_active_channels():
    fmap = torch.zeros(1, 5, 4, 4)
    fmap[0, 3] = 2.0
    fmap[0, 1] = 1.0
    fig = layers.plot_feature_maps({"stage": fmap}, n=2)
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert (
        len(shown) == 2
        and float(shown[0].max()) == 2.0
        and float(shown[1].max()) == 1.0
    )
    with pytest.raises(ValueError):
        layers.plot_feature_maps({})
    with pytest.raises(ValueError, match="C, H, W"):
        layers.plot_feature_maps({"bad": torch.zeros(4, 4)})


def test_plot_feature_maps_of_stage_outputs(lite0_random):
    # The maps come from tl.stages.stage_outputs now (it left tlutils.layers).
    stages = [1, 4, 8]
    maps = tl.stages.stage_outputs(lite0_random, torch.randn(1, 3, 32, 32), stages)
    fig = layers.plot_feature_maps(
        {tl.stages.STAGE_NAMES[s]: m for s, m in zip(stages, maps, strict=True)}, n=3
    )
    assert sum(1 for ax in fig.axes if ax.images) == 3 * 3
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels[0].startswith("stage 1") and "(16, 16, 16)" in labels[0]
    assert labels[2].startswith("head conv") and "(1280, 1, 1)" in labels[2]


def test_embed_2d_separates_two_blobs():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20, 50))
    b = rng.normal(0, 1, (20, 50))
    b[:, :10] += 6.0
    xy = layers.embed_2d(torch.tensor(np.vstack([a, b])), method="pca")
    assert xy.shape == (40, 2)
    first = xy[:, 0]
    assert (first[:20].max() < first[20:].min()) or (
        first[:20].min() > first[20:].max()
    )
    assert layers.embed_2d(np.vstack([a, b]), method="tsne").shape == (40, 2)
    with pytest.raises(ValueError, match="pca"):
        layers.embed_2d(a, method="umap")
    with pytest.raises(ValueError):
        layers.embed_2d(a[0])


def test_plot_embeddings():
    xy = np.arange(12, dtype=float).reshape(6, 2)
    fig = layers.plot_embeddings(
        {"a": xy, "b": xy}, [0, 0, 0, 1, 1, 1], ["ants", "bees"]
    )
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="labels"):
        layers.plot_embeddings({"a": xy}, [0, 1], ["ants", "bees"])
