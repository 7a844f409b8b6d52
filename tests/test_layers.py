"""Tests for tlutils.layers (chapter 2)."""

import itertools

import matplotlib
import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tlutils as tl
from tlutils import layers

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    return tl.create_model(pretrained=False).eval()


def test_stage_outputs_timm_indices_match_hooks(lite0):
    x = torch.randn(2, 3, 64, 64)
    captured = {}
    handle = lite0.blocks[6].register_forward_hook(lambda m, i, o: captured.setdefault("late", o))
    with torch.no_grad():
        lite0(x)
    handle.remove()
    outs = layers.stage_outputs(lite0, x, [0, 1, 2, 3, 4])
    assert [o.shape[1] for o in outs] == [16, 24, 40, 112, 320]
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4, 2]
    assert torch.allclose(outs[-1], captured["late"], atol=1e-5)
    (last,) = layers.stage_outputs(lite0, x, [-1])
    assert torch.allclose(last, outs[-1])


def test_stage_outputs_shares_weights(lite0):
    before = lite0.conv_stem.weight.clone()
    layers.stage_outputs(lite0, torch.randn(1, 3, 32, 32), [0])
    assert torch.equal(before, lite0.conv_stem.weight)
    assert "conv_head.weight" in lite0.state_dict()  # the model itself is not truncated


def test_stage_outputs_torchvision_names():
    net = torchvision.models.resnet18(weights=None)
    a, b = layers.stage_outputs(net, torch.randn(1, 3, 64, 64), ["layer1", "layer4"])
    assert a.shape == (1, 64, 16, 16) and b.shape == (1, 512, 2, 2)


def test_stage_outputs_errors(lite0):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="out of range"):
        layers.stage_outputs(lite0, x, [5])
    with pytest.raises(ValueError, match="batch"):
        layers.stage_outputs(lite0, x[0], [0])
    with pytest.raises(ValueError, match="no modules named"):
        layers.stage_outputs(torchvision.models.resnet18(weights=None), x, ["layer9"])
    with pytest.raises(TypeError, match="feature_info"):
        layers.stage_outputs(torchvision.models.resnet18(weights=None), x, [0])
    with pytest.raises(TypeError):
        layers.stage_outputs(lite0, x, [0, "blocks.1"])
    with pytest.raises(ValueError):
        layers.stage_outputs(lite0, x, [])


def test_plot_filters(lite0):
    fig = layers.plot_filters(lite0.conv_stem, ncols=8)
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
    assert len(shown) == 2 and float(shown[0].max()) == 2.0 and float(shown[1].max()) == 1.0
    with pytest.raises(ValueError):
        layers.plot_feature_maps({})
    with pytest.raises(ValueError, match="C, H, W"):
        layers.plot_feature_maps({"bad": torch.zeros(4, 4)})


def test_embed_2d_separates_two_blobs():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20, 50))
    b = rng.normal(0, 1, (20, 50))
    b[:, :10] += 6.0
    xy = layers.embed_2d(torch.tensor(np.vstack([a, b])), method="pca")
    assert xy.shape == (40, 2)
    first = xy[:, 0]
    assert (first[:20].max() < first[20:].min()) or (first[:20].min() > first[20:].max())
    assert layers.embed_2d(np.vstack([a, b]), method="tsne").shape == (40, 2)
    with pytest.raises(ValueError, match="pca"):
        layers.embed_2d(a, method="umap")
    with pytest.raises(ValueError):
        layers.embed_2d(a[0])


def test_plot_embeddings():
    xy = np.arange(12, dtype=float).reshape(6, 2)
    fig = layers.plot_embeddings({"a": xy, "b": xy}, [0, 0, 0, 1, 1, 1], ["ants", "bees"])
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="labels"):
        layers.plot_embeddings({"a": xy}, [0, 1], ["ants", "bees"])


def _toy_loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=g), x, y


def test_train_for_seconds_stops_on_budget_and_learns():
    torch.manual_seed(0)
    loader, x, y = _toy_loader()
    model = nn.Linear(2, 2)
    ticks = itertools.count()  # a fake clock: one "second" per reading
    steps, epochs = layers.train_for_seconds(model, loader, seconds=60, lr=0.05, clock=lambda: float(next(ticks)))
    assert 50 <= steps <= 60 and epochs == -(-steps // 8)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() >= 0.9


def test_train_for_seconds_errors():
    loader, _, _ = _toy_loader()
    with pytest.raises(ValueError, match="positive"):
        layers.train_for_seconds(nn.Linear(2, 2), loader, seconds=0)
    frozen = tl.freeze(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="frozen"):
        layers.train_for_seconds(frozen, loader, seconds=1)
