import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tlutils as tl


def blobs(n=120, seed=0):
    """Two well-separated Gaussian blobs: a problem any linear head must learn."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (torch.arange(n) % 2).long()
    x[y == 1] += 3.0
    return TensorDataset(x, y)


def test_fit_learns_and_records_history():
    tl.seed_everything(0)
    train = DataLoader(blobs(), batch_size=16, shuffle=True)
    val = DataLoader(blobs(seed=1), batch_size=64)
    model = nn.Linear(8, 2)
    history = tl.fit(model, train, val, epochs=8, lr=0.05, device="cpu", progress=False)
    assert len(history.train_loss) == len(history.val_acc) == len(history.seconds) == 8
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.val_acc[-1] >= 0.95 and history.best_val_acc() >= history.val_acc[0]
    loss, acc = tl.evaluate(model, val, device="cpu")
    assert acc == pytest.approx(history.val_acc[-1]) and loss == pytest.approx(
        history.val_loss[-1], rel=1e-5
    )


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
    # The frozen BatchNorm stays in eval mode, so its running statistics do not move either.
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

    assert not run(
        "fixed", frozen=False
    )  # even a trainable BatchNorm keeps its statistics
    assert run("update_unfrozen", frozen=False) and not run(
        "update_unfrozen", frozen=True
    )
    assert run("update_all", frozen=True)  # what model.train() alone does
    with pytest.raises(ValueError, match="bn_stats"):
        tl.fit(
            nn.Linear(8, 2),
            DataLoader(blobs()),
            epochs=1,
            device="cpu",
            bn_stats="frozen",
        )


def test_keep_best_restores_the_best_epoch_and_patience_stops():
    tl.seed_everything(0)
    train = DataLoader(blobs(), batch_size=16, shuffle=True)
    val = DataLoader(blobs(seed=1), batch_size=64)
    model = nn.Linear(8, 2)
    tl.fit(model, train, val, epochs=3, lr=0.05, device="cpu", progress=False)
    # A far too large learning rate makes validation worse: patience runs out.
    sgd = torch.optim.SGD(model.parameters(), lr=50.0)
    history = tl.fit(
        model,
        train,
        val,
        epochs=8,
        optimizer=sgd,
        keep_best=True,
        patience=2,
        device="cpu",
        progress=False,
    )
    assert history.stopped_early and len(history.val_loss) < 8
    assert history.best_epoch == min(
        range(len(history.val_loss)), key=history.val_loss.__getitem__
    )
    loss, _ = tl.evaluate(model, val, device="cpu")
    assert loss == pytest.approx(min(history.val_loss), rel=1e-4, abs=1e-5)


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
    with pytest.raises(ValueError, match="monitor"):
        tl.fit(nn.Linear(8, 2), DataLoader(blobs()), DataLoader(blobs()), monitor="acc")
    with pytest.raises(ValueError, match="need a val_loader"):
        tl.fit(nn.Linear(8, 2), DataLoader(blobs()), keep_best=True)


def test_create_optimizer_by_name():
    params = [nn.Parameter(torch.zeros(2))]
    assert isinstance(tl.create_optimizer(params, "sgd", 0.1), torch.optim.SGD)
    assert tl.create_optimizer(params, "sgd", 0.1).param_groups[0]["momentum"] == 0.9
    assert (
        tl.create_optimizer(params, "sgd", 0.1, momentum=0.0).param_groups[0][
            "momentum"
        ]
        == 0
    )
    assert isinstance(tl.create_optimizer(params, "adamw", 0.1), torch.optim.AdamW)
    assert type(tl.create_optimizer(params, "adam", 0.1)) is torch.optim.Adam
    with pytest.raises(ValueError, match="opt must be one of"):
        tl.create_optimizer(params, "lbfgs")
    with pytest.raises(ValueError, match="lr"):
        tl.create_optimizer(params, "adam", 0.0)


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


def test_history_extend_joins_phases():
    a = tl.History(
        train_loss=[1.0], train_acc=[0.5], val_loss=[1.1], val_acc=[0.4], seconds=[1.0]
    )
    b = tl.History(
        train_loss=[0.5, 0.4], val_loss=[0.6, 0.7], val_acc=[0.7, 0.6], best_epoch=0
    )
    a.extend(b)
    assert a.val_acc == [0.4, 0.7, 0.6] and a.best_val_acc() == 0.7
    assert a.phase_starts == [0, 1] and a.best_epoch == 1  # counted over both phases


def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    mps = torch.backends.mps
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(mps, "is_available", lambda: False)
    assert tl.get_device() == torch.device("cpu")
    monkeypatch.setattr(mps, "is_available", lambda: True)
    assert tl.get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert tl.get_device() == torch.device("cuda")


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
