"""Tests for tlutils.finetune (chapter 4): discriminative learning rates and the two phases."""

import pytest
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tlutils as tl
from tlutils import finetune as ft


class Tiny(nn.Module):
    """A small classifier with a body of two stages and a ``classifier`` head."""

    def __init__(self, n_classes: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.stage = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(8, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stage(self.stem(x))))


def toy_loaders(n: int = 64, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Two classes of 8x8 images that differ in brightness: easy to learn."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 3, 8, 8, generator=g) + 3 * (2 * y - 1).view(-1, 1, 1, 1).float()
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=16, shuffle=True, generator=g), DataLoader(
        data, batch_size=64
    )


@pytest.fixture(scope="module")
def lite0_random() -> nn.Module:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3)


def test_param_groups_decay_by_stage(lite0_random):
    groups = ft.param_groups(lite0_random, lr=1e-3, decay=0.5)
    names = [g["name"] for g in groups]
    assert names == [f"stage {i}" for i in range(9)] + ["head"]
    lrs = [g["lr"] for g in groups]
    assert lrs[-1] == pytest.approx(1e-3)
    for lower, upper in zip(lrs, lrs[1:]):
        assert lower == pytest.approx(upper * 0.5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(lite0_random.parameters()))


def test_param_groups_of_a_generic_model_and_errors():
    groups = ft.param_groups(tl.freeze(Tiny()), 1e-3, decay=0.1)
    assert [g["name"] for g in groups] == [
        "stage 0",
        "stage 1",
        "head",
    ]  # frozen ones too
    assert groups[0]["lr"] == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="decay"):
        ft.param_groups(Tiny(), 1e-3, decay=0)
    with pytest.raises(ValueError, match="lr"):
        ft.param_groups(Tiny(), 0.0)


def test_param_groups_of_a_torchvision_resnet():
    model = tl.create_model("resnet18", pretrained=False)
    groups = ft.param_groups(model, 1e-2, decay=0.1)
    assert groups[-1]["name"] == "head" and groups[-1]["params"][0] is model.fc.weight
    assert [g["name"] for g in groups][:2] == ["stage 0", "stage 1"]  # conv1, bn1
    assert groups[0]["lr"] == pytest.approx(1e-2 * 0.1**6)


def test_warm_up_trains_only_the_head():
    torch.manual_seed(0)
    model = Tiny()
    body_before = {
        n: p.clone()
        for n, p in model.named_parameters()
        if not n.startswith("classifier")
    }
    stats_before = model.stem[1].running_mean.clone()
    head_before = model.classifier.weight.clone()
    train, val = toy_loaders()
    history = ft.warm_up(
        model, train, val, epochs=3, lr=0.05, device="cpu", progress=False
    )
    assert len(history.val_acc) == 3 and history.phase_starts == [0]
    for name, p in model.named_parameters():
        if name in body_before:
            assert torch.equal(p, body_before[name]) and not p.requires_grad
    assert torch.equal(
        model.stem[1].running_mean, stats_before
    )  # frozen BatchNorm: eval mode
    assert not torch.equal(model.classifier.weight, head_before)
    assert history.val_acc[-1] > 0.8


def test_fine_tune_gradual_unfreezing_from_the_top():
    torch.manual_seed(0)
    model = Tiny()
    train, val = toy_loaders()
    trainable = []

    def record(epoch, m):
        trainable.append(
            sorted(
                {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
            )
        )

    ft.fine_tune(
        model,
        train,
        val,
        epochs=3,
        lr=1e-3,
        gradual=True,
        on_epoch_end=record,
        device="cpu",
        progress=False,
    )
    # after epoch 0 the next stage is already unfrozen for epoch 1
    assert trainable[0] == ["classifier", "stage", "stem"]


def test_fine_tune_trains_the_given_stages_with_fixed_batchnorm_statistics():
    torch.manual_seed(0)
    model = Tiny()
    stem_before = model.stem[0].weight.clone()
    stage_before = model.stage[0].weight.clone()
    stats_before = model.stage[1].running_var.clone()
    train, val = toy_loaders()
    ft.fine_tune(
        model, train, val, epochs=1, lr=1e-2, stages=[1], device="cpu", progress=False
    )
    assert torch.equal(model.stem[0].weight, stem_before)
    assert not torch.equal(model.stage[0].weight, stage_before)
    assert torch.equal(model.stage[1].running_var, stats_before)  # the default: fixed
    ft.fine_tune(
        model,
        train,
        val,
        epochs=1,
        lr=1e-2,
        stages=[1],
        bn_stats="update_unfrozen",
        device="cpu",
        progress=False,
    )
    assert not torch.equal(model.stage[1].running_var, stats_before)
    with pytest.raises(ValueError, match="No trainable stage"):
        ft.fine_tune(model, train, val, stages=[9])


def test_fine_tune_keeps_the_best_checkpoint_and_stops_early():
    torch.manual_seed(0)
    model = Tiny()
    train, val = toy_loaders()
    ft.warm_up(model, train, val, epochs=3, lr=0.05, device="cpu", progress=False)
    # A far too large learning rate makes validation worse: patience runs out, the best comes back.
    history = ft.fine_tune(
        model,
        train,
        val,
        epochs=8,
        lr=5.0,
        opt="sgd",
        patience=2,
        device="cpu",
        progress=False,
    )
    assert history.stopped_early and len(history.val_loss) < 8
    assert history.best_epoch == min(
        range(len(history.val_loss)), key=history.val_loss.__getitem__
    )
    loss, _ = tl.evaluate(model, val, device=torch.device("cpu"))
    assert loss == pytest.approx(min(history.val_loss), rel=1e-4, abs=1e-5)


def test_warm_up_then_fine_tune_joins_the_phases():
    torch.manual_seed(0)
    model = Tiny()
    train, val = toy_loaders()
    history = ft.warm_up_then_fine_tune(
        model, train, val, warm_up_epochs=2, fine_tune_epochs=3, lr=1e-3, device="cpu"
    )
    assert len(history.train_loss) == len(history.val_acc) == 5
    assert history.phase_starts == [0, 2]
    assert history.best_epoch >= 2
    assert all(p.requires_grad for p in model.parameters())
    assert history.val_acc[-1] > 0.8


def test_fine_tune_on_a_split_lite0_trains_only_the_top(lite0_random):
    bottom, top = tl.stages.split_at_stage(lite0_random, 6)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        cached = bottom(x)
    tl.replace_head(top, 2)
    data = TensorDataset(cached, torch.arange(16) % 2)
    loader = DataLoader(data, batch_size=8)
    history = ft.fine_tune(top, loader, loader, epochs=1, stages=[7, 8], device="cpu")
    groups = [n for n, p in top.named_parameters() if p.requires_grad]
    assert groups and all(
        n.startswith(("blocks.6", "conv_head", "bn2", "classifier")) for n in groups
    )
    assert len(history.val_loss) == 1


def test_linear_probe_accuracy():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(100) % 2
    x = torch.randn(100, 5, generator=g) + 4 * y.view(-1, 1).float()
    assert tl.linear_probe_accuracy(x[:60], y[:60], x[60:], y[60:]) == 1.0
    with pytest.raises(ValueError, match="same length"):
        tl.linear_probe_accuracy(x[:60], y[:50], x[60:], y[60:])
