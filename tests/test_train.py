"""Tests for tlutils.train (chapters 2-4): the one training loop and its helpers."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tlutils as tl
from tlutils import train


def blobs(n=120, seed=0):
    """Two well-separated Gaussian blobs: a problem any linear head must learn."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (torch.arange(n) % 2).long()
    x[y == 1] += 3.0
    return TensorDataset(x, y)


def swapped(data, batch_size=16):
    """A shuffled loader of ``data`` with labels 0 and 1 swapped."""
    x, y = data.tensors
    g = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(x, 1 - y), batch_size=batch_size, shuffle=True, generator=g
    )


class ConstantLogits(nn.Module):
    """Logits that ignore the input: the test sets them before every evaluation."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return self.logits.expand(len(x), 2)


# Validation labels [0, 0, 0, 1]. Predicting class 1 everywhere is right once (accuracy
# 0.25) with a moderate loss; predicting class 0 with confidence 10 is right three times
# (accuracy 0.75) but pays a loss of about 10 for the fourth image. So the epoch with
# the lowest loss (0) and the one with the highest accuracy (1) differ.
SCRIPT = [(0.0, 1.0), (10.0, 0.0), (0.0, 2.0), (0.0, 3.0), (0.0, 4.0), (0.0, 5.0)]


def scripted_fit(**kwargs):
    """fit on ConstantLogits whose weights at epoch k's evaluation are SCRIPT[k].

    SGD with lr=0 leaves the weights as they are; on_epoch_end (which runs after the
    evaluation) sets the next epoch's. Returns the model, the history and the epochs
    the hook saw.
    """
    model = ConstantLogits()
    with torch.no_grad():
        model.logits.copy_(torch.tensor(SCRIPT[0]))
    seen = []

    def next_logits(epoch, net):
        seen.append(epoch)
        if epoch + 1 < len(SCRIPT):
            with torch.no_grad():
                net.logits.copy_(torch.tensor(SCRIPT[epoch + 1]))

    data = TensorDataset(torch.zeros(4, 1), torch.tensor([0, 0, 0, 1]))
    history = tl.fit(
        model,
        DataLoader(data, batch_size=4),
        DataLoader(data, batch_size=4),
        epochs=len(SCRIPT),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        on_epoch_end=next_logits,
        device="cpu",
        progress=False,
        **kwargs,
    )
    return model, history, seen


def test_fit_learns_and_records_history():
    tl.seed_everything(0)
    train_loader = DataLoader(blobs(), batch_size=16, shuffle=True)
    val = DataLoader(blobs(seed=1), batch_size=64)
    model = nn.Linear(8, 2)
    history = tl.fit(
        model, train_loader, val, epochs=8, lr=0.05, device="cpu", progress=False
    )
    assert len(history.train_loss) == len(history.val_acc) == len(history.seconds) == 8
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.val_acc[-1] >= 0.95 and history.best_val_acc() >= history.val_acc[0]
    loss, acc = tl.evaluate(model, val, device="cpu")
    assert acc == pytest.approx(history.val_acc[-1]) and loss == pytest.approx(
        history.val_loss[-1], rel=1e-5
    )  # keep_best is off by default: the last epoch's weights stay
    assert history.phase_starts == [0] and not history.stopped_early
    assert history.best_epoch == min(range(8), key=history.val_loss.__getitem__)


def test_fit_without_validation_records_no_best_epoch():
    history = tl.fit(
        nn.Linear(8, 2),
        DataLoader(blobs(), batch_size=16),
        epochs=2,
        device="cpu",
        progress=False,
    )
    assert len(history.train_loss) == 2 and history.val_loss == []
    assert history.best_epoch is None and math.isnan(history.best_val_acc())


def test_fit_is_reproducible_with_a_seed():
    def run():
        tl.seed_everything(1)
        model = nn.Linear(8, 2)
        tl.fit(
            model,
            DataLoader(blobs(), batch_size=16, shuffle=True),
            epochs=2,
            device="cpu",
            progress=False,
        )
        return model.weight.detach().clone()

    assert torch.equal(run(), run())


def test_fit_trains_only_unfrozen_parameters():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    tl.freeze(model, ["0", "1"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tl.fit(
        model,
        DataLoader(blobs(), batch_size=16),
        epochs=1,
        device="cpu",
        progress=False,
    )
    after = model.state_dict()
    assert torch.equal(before["0.weight"], after["0.weight"])
    # The frozen BatchNorm stays in eval mode, so its running statistics do not move.
    assert torch.equal(before["1.running_mean"], after["1.running_mean"])
    assert not torch.equal(before["2.weight"], after["2.weight"])


def test_bn_stats_say_which_batchnorm_statistics_move():
    def run(bn_stats, frozen):
        model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
        if frozen:
            tl.freeze(model, ["0", "1"])
        before = model[1].running_mean.clone()
        loader = DataLoader(blobs(), batch_size=16)
        tl.fit(model, loader, epochs=1, device="cpu", bn_stats=bn_stats, progress=False)
        return not torch.equal(before, model[1].running_mean)

    assert not run("fixed", frozen=False)  # even a trainable BatchNorm keeps them
    assert not run("fixed", frozen=True)
    assert run("update_unfrozen", frozen=False)
    assert not run("update_unfrozen", frozen=True)
    assert run("update_all", frozen=True)  # what model.train() alone does
    assert run("update_all", frozen=False)


def test_bn_stats_default_is_update_unfrozen():
    def moved(**kwargs):
        model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
        tl.freeze(model[1])
        before = model[1].running_mean.clone()
        loader = DataLoader(blobs(), batch_size=16)
        tl.fit(model, loader, epochs=1, device="cpu", **kwargs)
        return not torch.equal(before, model[1].running_mean)

    assert not moved(progress=False)  # a frozen BatchNorm keeps its statistics
    assert moved(bn_stats="update_all", progress=False)


@pytest.mark.parametrize("bad", ["frozen", "all", "none", "update", None, True])
def test_invalid_bn_stats_are_an_error_naming_bn_stats(bad):
    # The old bn_eval values ("all", "frozen", "none") are not bn_stats values.
    with pytest.raises(ValueError, match="bn_stats"):
        tl.fit(
            nn.Linear(8, 2),
            DataLoader(blobs()),
            epochs=1,
            device="cpu",
            bn_stats=bad,
            progress=False,
        )


def test_keep_best_restores_the_best_epoch_and_patience_stops():
    tl.seed_everything(0)
    train_loader = DataLoader(blobs(), batch_size=16, shuffle=True)
    val = DataLoader(blobs(seed=1), batch_size=64)
    model = nn.Linear(8, 2)
    tl.fit(model, train_loader, val, epochs=3, lr=0.05, device="cpu", progress=False)
    # SGD on swapped labels makes validation worse every epoch (an absurd learning
    # rate does not: on these separable blobs it only plateaus): patience runs out.
    history = tl.fit(
        model,
        swapped(blobs()),
        val,
        epochs=8,
        lr=0.01,
        opt="sgd",
        keep_best=True,
        patience=2,
        device="cpu",
        progress=False,
    )
    assert history.stopped_early and len(history.val_loss) < 8
    assert history.best_epoch == min(
        range(len(history.val_loss)), key=history.val_loss.__getitem__
    )
    assert len(history.val_loss) == history.best_epoch + 2 + 1  # 2 epochs, no gain
    assert history.val_loss[-1] > min(history.val_loss)  # the last epoch was worse...
    loss, _ = tl.evaluate(model, val, device="cpu")
    assert loss == pytest.approx(min(history.val_loss), rel=1e-4, abs=1e-5)  # ...undone


def test_keep_best_restores_exactly_the_weights_of_the_best_epoch():
    model, history, _ = scripted_fit(keep_best=True)
    assert len(history.val_loss) == len(SCRIPT) and not history.stopped_early
    assert history.best_epoch == 0
    assert model.logits.tolist() == list(SCRIPT[0])
    batch = (torch.zeros(4, 1), torch.tensor([0, 0, 0, 1]))
    loss, _ = tl.evaluate(model, [batch], device="cpu")
    assert loss == pytest.approx(min(history.val_loss))


def test_without_keep_best_the_last_weights_stay():
    model, history, _ = scripted_fit()
    assert history.best_epoch == 0
    assert model.logits.tolist() == list(SCRIPT[-1])


def test_monitor_val_acc_picks_and_restores_the_most_accurate_epoch():
    _, by_loss, _ = scripted_fit()
    model, by_acc, _ = scripted_fit(monitor="val_acc", keep_best=True)
    assert by_acc.val_acc == pytest.approx([0.25, 0.75, 0.25, 0.25, 0.25, 0.25])
    assert by_loss.best_epoch == 0 and by_acc.best_epoch == 1
    assert by_acc.val_loss[1] > by_acc.val_loss[0]  # the most accurate is not the best
    assert model.logits.tolist() == list(SCRIPT[1])


def test_patience_counts_epochs_without_improvement_of_the_monitored_number():
    model, history, seen = scripted_fit(patience=2, keep_best=True)
    assert history.stopped_early and history.best_epoch == 0
    assert len(history.val_loss) == len(history.train_loss) == 3  # epochs 1, 2 worse
    assert seen == [0, 1, 2]  # the hook ran for every epoch that ran, no more
    assert model.logits.tolist() == list(SCRIPT[0])
    _, history, seen = scripted_fit(patience=2, monitor="val_acc")
    assert history.stopped_early and history.best_epoch == 1 and seen == [0, 1, 2, 3]
    _, history, _ = scripted_fit(patience=len(SCRIPT))
    assert not history.stopped_early and len(history.val_loss) == len(SCRIPT)


def test_patience_running_out_on_the_last_epoch_is_not_stopping_early():
    # best at epoch 0; patience 5 runs out exactly at the sixth and last epoch
    _, history, seen = scripted_fit(patience=len(SCRIPT) - 1)
    assert len(history.val_loss) == len(SCRIPT) and seen == list(range(len(SCRIPT)))
    assert not history.stopped_early  # every epoch ran
    _, history, _ = scripted_fit(patience=len(SCRIPT) - 2)
    assert history.stopped_early and len(history.val_loss) == len(SCRIPT) - 1


def test_patience_with_a_nan_validation_loss_from_the_start():
    model = nn.Linear(8, 2)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    loader = DataLoader(blobs(n=32), batch_size=16)
    history = tl.fit(
        model, loader, loader, epochs=5, patience=2, device="cpu", progress=False
    )
    assert history.stopped_early and len(history.val_loss) < 5


def test_monitor_val_acc_and_the_epoch_hook():
    tl.seed_everything(0)
    seen = []
    history = tl.fit(
        nn.Linear(8, 2),
        DataLoader(blobs(), batch_size=16),
        DataLoader(blobs(seed=1)),
        epochs=4,
        lr=0.05,
        monitor="val_acc",
        device="cpu",
        progress=False,
        on_epoch_end=lambda epoch, model: seen.append((epoch, type(model).__name__)),
    )
    assert seen == [(0, "Linear"), (1, "Linear"), (2, "Linear"), (3, "Linear")]
    assert history.val_acc[history.best_epoch] == max(history.val_acc)
    assert history.best_epoch == history.val_acc.index(max(history.val_acc))


def test_the_epoch_hook_runs_without_validation_too():
    seen = []
    tl.fit(
        nn.Linear(8, 2),
        DataLoader(blobs(), batch_size=16),
        epochs=3,
        device="cpu",
        progress=False,
        on_epoch_end=lambda epoch, model: seen.append(epoch),
    )
    assert seen == [0, 1, 2]  # once per epoch, with its 0-based index


def test_fit_argument_errors():
    loader = DataLoader(blobs())
    with pytest.raises(ValueError, match="monitor"):
        tl.fit(nn.Linear(8, 2), loader, loader, monitor="acc")
    with pytest.raises(ValueError, match="need a val_loader"):
        tl.fit(nn.Linear(8, 2), loader, keep_best=True)
    with pytest.raises(ValueError, match="need a val_loader"):
        tl.fit(nn.Linear(8, 2), loader, patience=2)
    with pytest.raises(ValueError, match="patience"):
        tl.fit(nn.Linear(8, 2), loader, loader, patience=0)
    with pytest.raises(ValueError, match="epochs"):
        tl.fit(nn.Linear(8, 2), loader, epochs=0)
    with pytest.raises(ValueError, match="opt must be one of"):
        tl.fit(nn.Linear(8, 2), loader, opt="rmsprop", device="cpu")


def test_an_optimizer_object_replaces_opt_and_lr():
    model = nn.Linear(8, 2)
    before = model.weight.detach().clone()
    frozen_in_place = torch.optim.SGD(model.parameters(), lr=0.0)
    tl.fit(
        model,
        DataLoader(blobs(), batch_size=16),
        epochs=1,
        lr=1.0,
        opt="adam",
        optimizer=frozen_in_place,
        device="cpu",
        progress=False,
    )
    assert torch.equal(model.weight, before)  # lr=1.0 and opt="adam" were not used


def test_fit_passes_opt_lr_and_weight_decay_to_create_optimizer(monkeypatch):
    made = []

    def spy(params, opt="adam", lr=1e-3, momentum=0.9, weight_decay=0.0):
        made.append((opt, lr, weight_decay))
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)

    monkeypatch.setattr(train, "create_optimizer", spy)
    tl.fit(
        nn.Linear(8, 2),
        DataLoader(blobs(), batch_size=16),
        epochs=1,
        lr=0.02,
        opt="sgd",
        weight_decay=0.1,
        device="cpu",
        progress=False,
    )
    assert made == [("sgd", 0.02, 0.1)]


def test_weight_decay_shrinks_the_weights():
    def norm(weight_decay):
        tl.seed_everything(0)
        model = nn.Linear(8, 2)
        tl.fit(
            model,
            DataLoader(blobs(), batch_size=16),
            epochs=3,
            lr=0.05,
            opt="sgd",
            weight_decay=weight_decay,
            device="cpu",
            progress=False,
        )
        return model.weight.norm().item()

    assert norm(0.5) < norm(0.0)


def test_create_optimizer_by_name():
    params = [nn.Parameter(torch.zeros(2))]
    assert isinstance(tl.create_optimizer(params, "sgd", 0.1), torch.optim.SGD)
    assert tl.create_optimizer(params, "sgd", 0.1).param_groups[0]["momentum"] == 0.9
    sgd = tl.create_optimizer(params, "sgd", 0.1, momentum=0.0)
    assert sgd.param_groups[0]["momentum"] == 0
    assert isinstance(tl.create_optimizer(params, "adamw", 0.1), torch.optim.AdamW)
    assert type(tl.create_optimizer(params, "adam", 0.1)) is torch.optim.Adam
    assert type(tl.create_optimizer(params)) is torch.optim.Adam  # the default
    adamw = tl.create_optimizer(params, opt="adamw", lr=0.1, weight_decay=0.05)
    assert adamw.param_groups[0]["weight_decay"] == 0.05
    assert adamw.param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError, match="opt must be one of"):
        tl.create_optimizer(params, "lbfgs")
    with pytest.raises(ValueError, match="lr"):
        tl.create_optimizer(params, "adam", 0.0)


def test_create_optimizer_keeps_parameter_groups():
    groups = [
        {"params": [nn.Parameter(torch.zeros(2))], "lr": 1e-4, "name": "stage 0"},
        {"params": [nn.Parameter(torch.zeros(2))], "name": "head"},
    ]
    optimizer = tl.create_optimizer(groups, "sgd", lr=1e-2)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-4, 1e-2]
    assert [g["name"] for g in optimizer.param_groups] == ["stage 0", "head"]


def test_fit_with_everything_frozen_is_a_clear_error():
    model = tl.freeze(nn.Linear(8, 2))
    with pytest.raises(ValueError, match="Every parameter is frozen"):
        tl.fit(
            model,
            DataLoader(blobs(), batch_size=16),
            epochs=1,
            device="cpu",
            progress=False,
        )


def test_history_defaults():
    history = tl.History()
    assert history.phase_starts == [0] and history.best_epoch is None
    assert not history.stopped_early and history.train_loss == []
    assert tl.History().phase_starts is not history.phase_starts  # not shared


def test_history_extend_joins_phases():
    a = tl.History(
        train_loss=[1.0], train_acc=[0.5], val_loss=[1.1], val_acc=[0.4], seconds=[1.0]
    )
    b = tl.History(
        train_loss=[0.5, 0.4],
        train_acc=[0.8, 0.9],
        val_loss=[0.6, 0.7],
        val_acc=[0.7, 0.6],
        seconds=[2.0, 2.0],
        best_epoch=0,
        stopped_early=True,
    )
    assert a.extend(b) is a
    assert a.val_acc == [0.4, 0.7, 0.6] and a.best_val_acc() == 0.7
    assert a.train_acc == [0.5, 0.8, 0.9] and a.seconds == [1.0, 2.0, 2.0]
    assert a.phase_starts == [0, 1] and a.best_epoch == 1  # counted over both phases
    assert a.stopped_early


def test_history_extend_from_an_empty_history():
    # What FineTuneHistory().extend(...) did before it was merged into History.
    joined = tl.History().extend(tl.History(train_loss=[1.0, 0.5], val_acc=[0.5, 0.6]))
    joined.extend(
        tl.History(train_loss=[0.4], val_acc=[0.7], phase_starts=[0], best_epoch=0)
    )
    assert joined.phase_starts == [0, 2] and joined.best_epoch == 2
    assert joined.val_acc == [0.5, 0.6, 0.7]


def test_history_extend_keeps_the_phases_of_a_joined_history():
    two_phases = tl.History(train_loss=[1.0, 0.9, 0.8], phase_starts=[0, 2])
    assert tl.History().extend(two_phases).phase_starts == [0, 2]


def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    mps = torch.backends.mps
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(mps, "is_available", lambda: False)
    assert tl.get_device() == torch.device("cpu")
    monkeypatch.setattr(mps, "is_available", lambda: True)
    assert tl.get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert tl.get_device() == torch.device("cuda")


def test_get_device_without_an_mps_backend(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.backends, "mps")
    assert tl.get_device() == torch.device("cpu")


def test_seed_everything_repeats_random_numbers():
    import random

    import numpy as np

    tl.seed_everything(3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    tl.seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_wrong_class_count_is_a_clear_error():
    data = TensorDataset(torch.randn(8, 8), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]))
    with pytest.raises(
        ValueError, match="The model has 2 outputs, but the data has label 4"
    ):
        tl.fit(
            nn.Linear(8, 2),
            DataLoader(data, batch_size=8),
            epochs=1,
            device="cpu",
            progress=False,
        )
    with pytest.raises(ValueError, match="replace_head"):
        tl.evaluate(nn.Linear(8, 2), DataLoader(data, batch_size=8), device="cpu")


def test_predict_returns_logits_and_labels_on_the_cpu():
    model = nn.Linear(8, 2)
    data = blobs(n=20)
    logits, labels = tl.predict(model, DataLoader(data, batch_size=8), device="cpu")
    assert logits.shape == (20, 2) and torch.equal(labels, data.tensors[1])
    with torch.no_grad():
        assert torch.allclose(logits, model(data.tensors[0]))


def test_mixed_precision_means_the_same_in_fit_predict_and_evaluate(monkeypatch):
    """float16 autocast only when asked for: predict/evaluate default to float32, and fit
    passes its own setting to its validation pass."""
    import tlutils.train as train

    asked = []
    real = train._autocast
    monkeypatch.setattr(
        train,
        "_autocast",
        lambda device, enabled: asked.append(enabled) or real(device, enabled),
    )
    data = blobs(n=16)
    loader = DataLoader(data, batch_size=8)
    tl.predict(nn.Linear(8, 2), loader, device="cpu")
    assert asked and not any(asked)
    asked.clear()
    tl.evaluate(nn.Linear(8, 2), loader, device="cpu", mixed_precision=True)
    assert asked and all(asked)
    asked.clear()
    tl.fit(nn.Linear(8, 2), loader, loader, epochs=1, device="cpu", progress=False,
           mixed_precision=False)  # fmt: skip
    assert asked and not any(asked)
