"""Tests for tlutils.finetune (chapter 4): stages, discriminative learning rates, the two phases, splitting."""

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
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
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
    return DataLoader(data, batch_size=16, shuffle=True, generator=g), DataLoader(data, batch_size=64)


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3)


def test_stages_of_efficientnet(lite0):
    names = [name for name, _ in ft.stages(lite0)]
    assert names == ["stem"] + [f"blocks.{i}" for i in range(7)] + ["conv_head", "head"]
    assert dict(ft.stages(lite0))["conv_head"] == ["conv_head", "bn2"]


def test_stages_of_a_generic_model():
    assert ft.stages(Tiny()) == [("stem", ["stem"]), ("stage", ["stage"]), ("head", ["classifier"])]


def test_param_groups_decay_by_stage(lite0):
    groups = ft.param_groups(lite0, base_lr=1e-3, decay=0.5)
    assert [g["name"] for g in groups][-2:] == ["conv_head", "head"]
    lrs = [g["lr"] for g in groups]
    assert lrs[-1] == pytest.approx(1e-3)
    for lower, upper in zip(lrs, lrs[1:]):
        assert lower == pytest.approx(upper * 0.5)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(lite0.parameters()))


def test_param_groups_trainable_only_and_errors():
    model = tl.freeze(Tiny())
    tl.unfreeze(model, "classifier")
    groups = ft.param_groups(model, 1e-3, trainable_only=True)
    assert [g["name"] for g in groups] == ["head"]
    with pytest.raises(ValueError, match="decay"):
        ft.param_groups(model, 1e-3, decay=0)
    with pytest.raises(ValueError, match="base_lr"):
        ft.param_groups(model, 0.0)


def test_make_optimizer_kinds():
    params = [nn.Parameter(torch.zeros(2))]
    assert isinstance(ft.make_optimizer(params, "sgd", 0.1), torch.optim.SGD)
    assert ft.make_optimizer(params, "sgd", 0.1).param_groups[0]["momentum"] == 0.9
    assert isinstance(ft.make_optimizer(params, "adamw", 0.1), torch.optim.AdamW)
    with pytest.raises(ValueError, match="Unknown optimizer"):
        ft.make_optimizer(params, "lbfgs")


def test_warm_up_head_trains_only_the_head():
    torch.manual_seed(0)
    model = Tiny()
    body_before = {n: p.clone() for n, p in model.named_parameters() if not n.startswith("classifier")}
    stats_before = model.stem[1].running_mean.clone()
    head_before = model.classifier.weight.clone()
    train, val = toy_loaders()
    history = ft.warm_up_head(model, train, val, epochs=3, lr=0.05, device="cpu")
    assert len(history.val_acc) == 3 and history.phase_starts == [0]
    for name, p in model.named_parameters():
        if name in body_before:
            assert torch.equal(p, body_before[name]) and not p.requires_grad
    assert torch.equal(model.stem[1].running_mean, stats_before)  # frozen BatchNorm stays in eval mode
    assert not torch.equal(model.classifier.weight, head_before)
    assert history.val_acc[-1] > 0.8


def test_fine_tune_gradual_unfreezing_from_the_top():
    torch.manual_seed(0)
    model = Tiny()
    train, val = toy_loaders()
    trainable = []

    def record(epoch, m):
        trainable.append(sorted({n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}))

    ft.fine_tune(model, train, val, epochs=3, lr=1e-3, gradual=True, on_epoch_end=record, device="cpu")
    assert trainable[0] == ["classifier", "stage"]
    assert trainable[1] == ["classifier", "stage", "stem"]


def test_fine_tune_selected_stages_and_bn_eval():
    torch.manual_seed(0)
    model = Tiny()
    stem_before = model.stem[0].weight.clone()
    stats_before = model.stage[1].running_var.clone()
    train, val = toy_loaders()
    ft.fine_tune(model, train, val, epochs=1, lr=1e-2, unfreeze_stages=["stage"], bn_eval="all", device="cpu")
    assert torch.equal(model.stem[0].weight, stem_before)
    assert torch.equal(model.stage[1].running_var, stats_before)  # eval-mode BN: statistics untouched
    ft.fine_tune(model, train, val, epochs=1, lr=1e-2, unfreeze_stages=["stage"], bn_eval="frozen", device="cpu")
    assert not torch.equal(model.stage[1].running_var, stats_before)  # train-mode BN updates them
    with pytest.raises(ValueError, match="Unknown stage"):
        ft.fine_tune(model, train, val, unfreeze_stages=["blocks.9"])


def test_fine_tune_keeps_the_best_checkpoint_and_stops_early():
    torch.manual_seed(0)
    model = Tiny()
    train, val = toy_loaders()
    ft.warm_up_head(model, train, val, epochs=3, lr=0.05, device="cpu")
    # A far too large learning rate makes validation worse: patience runs out, the best weights come back.
    history = ft.fine_tune(model, train, val, epochs=8, lr=5.0, optimizer="sgd", patience=2, device="cpu")
    assert history.stopped_early and len(history.val_loss) < 8
    assert history.best_epoch == min(range(len(history.val_loss)), key=history.val_loss.__getitem__)
    loss, _ = tl.evaluate(model, val, device=torch.device("cpu"))
    assert loss == pytest.approx(min(history.val_loss), rel=1e-4, abs=1e-5)


def test_warmup_then_finetune_joins_the_phases():
    torch.manual_seed(0)
    model = Tiny()
    train, val = toy_loaders()
    history = ft.warmup_then_finetune(
        model, train, val, warmup_epochs=2, finetune_epochs=3, finetune_lr=1e-3, device="cpu"
    )
    assert len(history.train_loss) == len(history.val_acc) == 5
    assert history.phase_starts == [0, 2]
    assert history.best_epoch >= 2
    assert all(p.requires_grad for p in model.parameters())
    assert history.val_acc[-1] > 0.8


def test_history_extend_with_a_plain_history():
    joined = ft.FineTuneHistory().extend(tl.History(train_loss=[1.0, 0.5], val_acc=[0.5, 0.6]))
    joined.extend(ft.FineTuneHistory(train_loss=[0.4], val_acc=[0.7], phase_starts=[0], best_epoch=0))
    assert joined.phase_starts == [0, 2] and joined.best_epoch == 2 and joined.val_acc == [0.5, 0.6, 0.7]


def test_split_at_stage_is_exact(lite0):
    lite0.eval()
    bottom, top = ft.split_at_stage(lite0, 5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(top.eval()(bottom(x)), lite0(x), atol=1e-4, rtol=1e-4)
    assert not any(p.requires_grad for p in bottom.parameters()) and not bottom.training
    assert [name for name, _ in ft.stages(top)] == ["blocks.5", "blocks.6", "conv_head", "head"]
    assert "blocks.6.0.conv_pw.weight" in dict(top.named_parameters())
    with torch.no_grad():
        top.blocks[6][0].conv_pw.weight.add_(1.0)
    lite0.load_state_dict(top.state_dict(), strict=False)
    assert torch.equal(lite0.blocks[6][0].conv_pw.weight, top.blocks[6][0].conv_pw.weight)
    with pytest.raises(ValueError, match="stage"):
        ft.split_at_stage(lite0, 0)
    with pytest.raises(TypeError):
        ft.split_at_stage(Tiny(), 1)


def test_linear_probe_accuracy():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(100) % 2
    x = torch.randn(100, 5, generator=g) + 4 * y.view(-1, 1).float()
    assert ft.linear_probe_accuracy(x[:60], y[:60], x[60:], y[60:]) == 1.0
    with pytest.raises(ValueError, match="same length"):
        ft.linear_probe_accuracy(x[:60], y[:50], x[60:], y[60:])


def test_stages_of_a_torchvision_resnet():
    model = tl.create_model("resnet18", pretrained=False)
    names = [name for name, _ in ft.stages(model)]
    assert names == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "head"]
    groups = ft.param_groups(model, 1e-2, decay=0.1)
    assert groups[-1]["name"] == "head" and groups[-1]["params"][0] is model.fc.weight
    assert groups[0]["lr"] == pytest.approx(1e-2 * 0.1**6)
