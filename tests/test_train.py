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
    assert acc == pytest.approx(history.val_acc[-1]) and loss == pytest.approx(history.val_loss[-1], rel=1e-5)


def test_fit_is_reproducible_with_a_seed():
    def run():
        tl.seed_everything(1)
        model = nn.Linear(8, 2)
        tl.fit(model, DataLoader(blobs(), batch_size=16, shuffle=True), epochs=2, device="cpu", progress=False)
        return model.weight.detach().clone()

    assert torch.equal(run(), run())


def test_fit_trains_only_unfrozen_parameters():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    tl.freeze(model, ["0", "1"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tl.fit(model, DataLoader(blobs(), batch_size=16), epochs=1, device="cpu", progress=False)
    after = model.state_dict()
    assert torch.equal(before["0.weight"], after["0.weight"])
    # The frozen BatchNorm stays in eval mode, so its running statistics do not move either.
    assert torch.equal(before["1.running_mean"], after["1.running_mean"])
    assert not torch.equal(before["2.weight"], after["2.weight"])


def test_bn_eval_none_lets_frozen_batchnorm_statistics_move():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    tl.freeze(model, ["0", "1"])
    before = model[1].running_mean.clone()
    tl.fit(model, DataLoader(blobs(), batch_size=16), epochs=1, device="cpu", bn_eval="none", progress=False)
    assert not torch.equal(before, model[1].running_mean)
    with pytest.raises(ValueError, match="bn_eval"):
        tl.fit(model, DataLoader(blobs(), batch_size=16), epochs=1, device="cpu", bn_eval="some", progress=False)


def test_fit_with_everything_frozen_is_a_clear_error():
    model = tl.freeze(nn.Linear(8, 2))
    with pytest.raises(ValueError, match="Every parameter is frozen"):
        tl.fit(model, DataLoader(blobs(), batch_size=16), epochs=1, device="cpu", progress=False)


def test_history_extend_joins_phases():
    a = tl.History(train_loss=[1.0], train_acc=[0.5], val_loss=[1.1], val_acc=[0.4], seconds=[1.0])
    b = tl.History(train_loss=[0.5], train_acc=[0.8], val_loss=[0.6], val_acc=[0.7], seconds=[2.0])
    a.extend(b)
    assert a.val_acc == [0.4, 0.7] and a.best_val_acc() == 0.7


def test_get_device_is_usable():
    device = tl.get_device()
    assert torch.zeros(1, device=device).device.type == device.type


def test_wrong_class_count_is_a_clear_error():
    data = TensorDataset(torch.randn(8, 8), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]))
    with pytest.raises(ValueError, match="The model has 2 outputs, but the data has label 4"):
        tl.fit(nn.Linear(8, 2), DataLoader(data, batch_size=8), epochs=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match="replace_head"):
        tl.evaluate(nn.Linear(8, 2), DataLoader(data, batch_size=8), device="cpu")
