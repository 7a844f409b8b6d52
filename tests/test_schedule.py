"""Tests of the learning-rate schedule of tlutils.train (chapter 4): warm-up, cosine."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tlutils as tl
from tlutils import finetune as ft
from tlutils.train import lr_schedule


class Tiny(nn.Module):
    """Two stages with parameters and a ``classifier`` head: a model fine_tune knows."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stage(self.stem(x))))


def loader(n: int = 40) -> DataLoader:
    """Ten batches of four 6x6 images, two classes."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 3, 6, 6, generator=g) + y.view(-1, 1, 1, 1).float()
    return DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True, generator=g)


def recording_loss(rates: list[list[float]], optimizer: torch.optim.Optimizer):
    """Cross-entropy that notes every group's rate of the step it is computed in."""

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rates.append([group["lr"] for group in optimizer.param_groups])
        return nn.functional.cross_entropy(logits, targets)

    return loss_fn


def test_fit_cosine_with_warm_up_rises_then_decays_to_about_zero():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 2))
    optimizer = tl.create_optimizer(model.parameters(), "adamw", 1e-2)
    rates: list[list[float]] = []
    tl.fit(
        model,
        loader(),
        epochs=3,
        optimizer=optimizer,
        loss_fn=recording_loss(rates, optimizer),
        schedule="cosine",
        warmup_steps=4,
        device="cpu",
        progress=False,
    )
    lr = [r[0] for r in rates]
    assert len(lr) == 30  # epochs * batches: one rate per step
    assert lr[:5] == sorted(lr[:5]) and lr[0] < 0.3e-2  # the warm-up rises
    assert lr.index(max(lr)) == 4 and max(lr) == pytest.approx(1e-2)
    assert all(a > b for a, b in zip(lr[4:], lr[5:]))  # then only falls
    assert lr[-1] < 0.01 * max(lr)  # to about zero


def test_fit_default_is_a_constant_rate_and_schedules_do_not_mix():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 2))
    optimizer = tl.create_optimizer(model.parameters(), "adam", 1e-3)
    rates: list[list[float]] = []
    tl.fit(
        model,
        loader(),
        epochs=2,
        optimizer=optimizer,
        loss_fn=recording_loss(rates, optimizer),
        device="cpu",
        progress=False,
    )
    assert {r[0] for r in rates} == {1e-3}
    step = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    with pytest.raises(ValueError, match="not both"):
        tl.fit(model, loader(), optimizer=optimizer, scheduler=step, schedule="cosine")
    with pytest.raises(ValueError, match="schedule must be one of"):
        tl.fit(model, loader(), schedule="linear")


def test_fine_tune_passes_the_schedule_to_its_own_optimizer():
    model = Tiny()
    rates: list[list[float]] = []
    captured: dict[str, torch.optim.Optimizer] = {}
    real = ft.create_optimizer

    def spy(*args, **kwargs):
        captured["opt"] = real(*args, **kwargs)
        return captured["opt"]

    def loss_fn(logits, targets):
        rates.append([g["lr"] for g in captured["opt"].param_groups])
        return nn.functional.cross_entropy(logits, targets)

    ft.create_optimizer = spy
    try:
        ft.fine_tune(
            model,
            loader(),
            epochs=2,
            lr=1e-3,
            decay=0.5,
            opt="adamw",
            weight_decay=0.05,
            schedule="cosine",
            warmup_steps=2,
            loss_fn=loss_fn,
            device="cpu",
            progress=False,
        )
    finally:
        ft.create_optimizer = real
    head = [r[-1] for r in rates]
    assert head[0] < head[2] == pytest.approx(1e-3)  # warm-up, then the peak
    assert head[-1] < 0.05 * 1e-3
    # every group follows the same curve: the discriminative ratios stay
    assert all(r[0] == pytest.approx(0.25 * r[-1]) for r in rates)


def test_lr_schedule_checks_its_steps():
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_schedule(optimizer, 10, "cosine", warmup_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        lr_schedule(optimizer, 0)
    warm = lr_schedule(optimizer, 10, "constant", warmup_steps=3)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        warm.step()
    assert seen[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1]) and seen[-1] == 0.1
