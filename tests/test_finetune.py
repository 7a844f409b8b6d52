"""Tests for tlutils.finetune (chapter 4): discriminative rates and the two phases."""

import copy

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


class Tower(nn.Module):
    """Three stages with parameters (a, b, c), a pooling stage and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.c(self.b(self.a(x)))))


def toy_loaders(n: int = 64, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Two classes of 8x8 images that differ in brightness: easy to learn."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 3, 8, 8, generator=g) + 3 * (2 * y - 1).view(-1, 1, 1, 1).float()
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=16, shuffle=True, generator=g), DataLoader(
        data, batch_size=64
    )


def swapped(loader: DataLoader) -> DataLoader:
    """The same images with labels 0 and 1 swapped: training on them hurts."""
    x, y = loader.dataset.tensors
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(x, 1 - y), batch_size=16, shuffle=True, generator=g)


@pytest.fixture(scope="module")
def lite0_random() -> nn.Module:
    """timm's architecture, random weights, 3 classes (tests must not change it)."""
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3)


def test_stages_of_a_generic_model():
    model = Tiny()
    assert tl.stages.stage_modules(model) == [["stem"], ["stage"], ["pool"]]
    assert tl.stages.head_modules(model) == ["classifier"]


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
    assert lrs[0] == pytest.approx(1e-3 * 0.5**9)  # stage 0, nine groups below the head
    owner = {id(p): n for n, p in lite0_random.named_parameters()}

    def prefixes(group):
        return {owner[id(p)].split(".")[0] for p in group["params"]}

    assert prefixes(groups[0]) == {"conv_stem", "bn1"}
    assert prefixes(groups[8]) == {"conv_head", "bn2"}
    assert prefixes(groups[9]) == {"classifier"}
    for k in range(1, 8):
        names = {owner[id(p)] for p in groups[k]["params"]}
        assert all(n.startswith(f"blocks.{k - 1}.") for n in names)
    same = ft.param_groups(lite0_random, lr=1e-3, weight_decay=0.01)
    assert {g["lr"] for g in same} == {1e-3}  # decay=1: one rate for all
    assert {g["weight_decay"] for g in same} == {0.01}


def test_param_groups_of_a_generic_model_and_errors():
    groups = ft.param_groups(tl.freeze(Tiny()), 1e-3, decay=0.1)
    names = [g["name"] for g in groups]
    assert names == ["stage 0", "stage 1", "head"]  # frozen ones too, pool has none
    assert groups[0]["lr"] == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="decay"):
        ft.param_groups(Tiny(), 1e-3, decay=0)
    with pytest.raises(ValueError, match="lr"):
        ft.param_groups(Tiny(), 0.0)


def test_param_groups_of_a_torchvision_resnet():
    model = tl.create_model("resnet18", pretrained=False)
    children = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    children += ["layer4", "avgpool"]
    assert tl.stages.stage_modules(model) == [[c] for c in children]
    assert tl.stages.head_modules(model) == ["fc"]
    groups = ft.param_groups(model, 1e-2, decay=0.1)
    assert groups[-1]["name"] == "head" and groups[-1]["params"][0] is model.fc.weight
    # relu, maxpool (stages 2, 3) and avgpool (8) have no parameters, hence no group
    names = ["stage 0", "stage 1", "stage 4", "stage 5", "stage 6", "stage 7", "head"]
    assert [g["name"] for g in groups] == names
    assert groups[0]["lr"] == pytest.approx(1e-2 * 0.1**6)


def test_param_groups_of_a_model_whose_head_is_inside_a_sequential():
    model = tl.create_model("mobilenet_v3_small", pretrained=False)
    groups = ft.param_groups(model, 1e-3)
    assert groups[-1]["name"] == "head"


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
    assert len(trainable) == 3  # the user's hook runs once per epoch


def changed_per_epoch(model, **fine_tune_kwargs):
    """The top-level modules whose parameters changed in each epoch of fine_tune."""
    train, val = toy_loaders()
    changed, trainable = [], []
    last = {n: p.detach().clone() for n, p in model.named_parameters()}

    def record(epoch, m):
        now = dict(m.named_parameters())
        moved = {n.split(".")[0] for n in now if not torch.equal(now[n], last[n])}
        changed.append(sorted(moved))
        trainable.append(
            sorted({n.split(".")[0] for n, p in now.items() if p.requires_grad})
        )
        last.update({n: p.detach().clone() for n, p in now.items()})

    ft.fine_tune(
        model,
        train,
        val,
        on_epoch_end=record,
        device="cpu",
        progress=False,
        **fine_tune_kwargs,
    )
    return changed, trainable


def test_gradual_unfreezing_trains_one_more_stage_per_epoch_from_the_top():
    torch.manual_seed(0)
    changed, trainable = changed_per_epoch(Tower(), epochs=4, lr=1e-2, gradual=True)
    assert changed == [
        ["c", "classifier"],  # epoch 0: the head and the highest stage
        ["b", "c", "classifier"],
        ["a", "b", "c", "classifier"],
        ["a", "b", "c", "classifier"],
    ]
    # In the hook the next epoch's stage is already unfrozen.
    assert trainable[:2] == [["b", "c", "classifier"], ["a", "b", "c", "classifier"]]


def test_gradual_unfreezing_of_chosen_stages_skips_the_others():
    torch.manual_seed(0)
    changed, _ = changed_per_epoch(
        Tower(), epochs=3, lr=1e-2, stages=[0, 2], gradual=True
    )
    assert changed == [
        ["c", "classifier"],
        ["a", "c", "classifier"],  # stage b (1) was not chosen: a (0) is next
        ["a", "c", "classifier"],
    ]


def test_without_gradual_every_chosen_stage_trains_from_the_first_epoch():
    torch.manual_seed(0)
    changed, _ = changed_per_epoch(Tower(), epochs=1, lr=1e-2)
    assert changed == [["a", "b", "c", "classifier"]]


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
    stem_stats = model.stem[1].running_var.clone()
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
    assert torch.equal(model.stem[1].running_var, stem_stats)  # frozen stage 0 keeps
    ft.fine_tune(
        model,
        train,
        val,
        epochs=1,
        lr=1e-2,
        stages=[1],
        bn_stats="update_all",
        device="cpu",
        progress=False,
    )
    assert not torch.equal(model.stem[1].running_var, stem_stats)  # even frozen
    with pytest.raises(ValueError, match="bn_stats"):
        ft.fine_tune(model, train, val, bn_stats="all", device="cpu")
    with pytest.raises(ValueError, match="No trainable stage"):
        ft.fine_tune(model, train, val, stages=[9])
    with pytest.raises(ValueError, match="No trainable stage"):
        ft.fine_tune(model, train, val, stages=[2])  # pool: nothing to train


def test_fine_tune_defaults_to_fixed_batchnorm_statistics():
    torch.manual_seed(0)
    model = Tiny()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    stem_before = model.stem[0].weight.clone()
    train, val = toy_loaders()
    ft.fine_tune(model, train, val, epochs=1, device="cpu", progress=False)
    assert not torch.equal(model.stem[0].weight, stem_before)  # it did train...
    assert all(p.requires_grad for p in model.parameters())  # ...every stage
    after = model.state_dict()
    for name, before in stats.items():  # ...but no BatchNorm statistics moved
        assert torch.equal(after[name], before), name


def test_fine_tune_keeps_the_best_checkpoint_and_stops_early():
    torch.manual_seed(0)
    model = Tiny()
    train, val = toy_loaders()
    ft.warm_up(model, train, val, epochs=3, lr=0.05, device="cpu", progress=False)
    # SGD on swapped labels makes validation worse every epoch (an absurd learning
    # rate on the right labels does not: the loss stays 0.0): patience runs out and
    # the best weights come back (keep_best is fine_tune's default).
    history = ft.fine_tune(
        model,
        swapped(train),
        val,
        epochs=8,
        lr=0.05,
        opt="sgd",
        patience=2,
        device="cpu",
        progress=False,
    )
    assert history.stopped_early and len(history.val_loss) < 8
    assert history.best_epoch == min(
        range(len(history.val_loss)), key=history.val_loss.__getitem__
    )
    assert len(history.val_loss) == history.best_epoch + 2 + 1
    assert history.val_loss[-1] > min(history.val_loss)
    loss, _ = tl.evaluate(model, val, device=torch.device("cpu"))
    assert loss == pytest.approx(min(history.val_loss), rel=1e-4, abs=1e-5)


def test_fine_tune_without_keep_best_keeps_the_last_weights():
    torch.manual_seed(0)
    model = Tiny()
    train, val = toy_loaders()
    history = ft.fine_tune(
        model,
        swapped(train),
        val,
        epochs=3,
        lr=0.05,
        opt="sgd",
        keep_best=False,
        device="cpu",
        progress=False,
    )
    assert history.val_loss[-1] > min(history.val_loss)
    loss, _ = tl.evaluate(model, val, device="cpu")
    assert loss == pytest.approx(history.val_loss[-1], rel=1e-4, abs=1e-5)


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


def test_warm_up_then_fine_tune_passes_options_to_fine_tune():
    torch.manual_seed(0)
    model = Tiny()
    stem_before = model.stem[0].weight.clone()
    train, val = toy_loaders()
    history = ft.warm_up_then_fine_tune(
        model,
        train,
        val,
        warm_up_epochs=1,
        fine_tune_epochs=2,
        stages=[1],
        bn_stats="update_unfrozen",
        device="cpu",
        progress=False,
    )
    assert history.phase_starts == [0, 1] and len(history.val_loss) == 3
    assert torch.equal(model.stem[0].weight, stem_before)  # stage 0 stayed frozen
    assert (
        not model.stem[0].weight.requires_grad and model.stage[0].weight.requires_grad
    )


def test_fine_tune_on_a_split_lite0_trains_only_the_top(lite0_random):
    # split_at_stage freezes the bottom, which shares weights: cut a copy.
    bottom, top = tl.stages.split_at_stage(copy.deepcopy(lite0_random), 6)
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


def test_warm_up_then_fine_tune_gives_shared_options_to_both_phases(monkeypatch):
    calls = []
    real_fit = ft.fit

    def recording_fit(*args, **kwargs):
        calls.append(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(ft, "fit", recording_fit)
    seen = []

    def loss_fn(logits, labels):
        seen.append(len(labels))
        return nn.functional.cross_entropy(logits, labels)

    torch.manual_seed(0)
    train, val = toy_loaders()
    ft.warm_up_then_fine_tune(
        Tiny(),
        train,
        val,
        warm_up_epochs=1,
        fine_tune_epochs=1,
        loss_fn=loss_fn,
        bn_stats="update_unfrozen",
        mixed_precision=False,
        device="cpu",
        progress=False,
    )
    assert len(calls) == 2  # warm-up, then fine-tuning
    for kwargs in calls:
        assert kwargs["loss_fn"] is loss_fn
        assert kwargs["bn_stats"] == "update_unfrozen"
        assert kwargs["mixed_precision"] is False
        assert kwargs["device"] == "cpu" and kwargs["progress"] is False
    # the loss saw every training batch of both phases (4 batches of 16 per epoch)
    assert seen.count(16) >= 8


def test_bad_bn_stats_is_refused_before_anything_trains():
    torch.manual_seed(0)
    model = Tiny()
    before = copy.deepcopy(model.state_dict())
    grads = [p.requires_grad for p in model.parameters()]
    train, val = toy_loaders()
    with pytest.raises(ValueError, match="bn_stats must be one of"):
        ft.fine_tune(model, train, val, bn_stats="eval", device="cpu")
    # nothing was frozen or trained
    assert [p.requires_grad for p in model.parameters()] == grads
    with pytest.raises(ValueError, match="bn_stats must be one of"):
        ft.warm_up_then_fine_tune(model, train, val, bn_stats="frozen", device="cpu")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == grads


def test_check_ranking_follows_the_verdict_rule_on_seed_accuracies():
    # One accuracy per seed ([runs, 1]): FT is below LP on every seed, LP-FT and LP
    # swap places from seed to seed.
    scores = {
        "LP": [0.8, 0.82, 0.81],
        "FT": [0.7, 0.72, 0.75],
        "LP-FT": [0.85, 0.8, 0.9],
    }
    right = tl.checks.check_ranking(["LP-FT", "LP", "FT"], scores)
    assert right.ok and "cannot tell" in str(right)  # LP-FT vs LP: inconclusive
    wrong = tl.checks.check_ranking(["FT", "LP", "LP-FT"], scores)
    assert not wrong.ok and "LP is better than FT" in " ".join(str(wrong).split())
    for bad in (["LP", "FT"], ["LP", "LP", "FT"], ["LP", "FT", "X"]):
        result = tl.checks.check_ranking(bad, scores)  # never raises
        assert not result.ok and "exactly once" in str(result)
    uneven = tl.checks.check_ranking(["LP", "FT"], {"LP": [1, 2], "FT": [0, 1, 0]})
    assert not uneven.ok and "run by run" in str(uneven)
