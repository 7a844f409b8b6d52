"""Tests of tlutils.smoke: the FULL smoke test's cap, and nothing capped without it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tlutils as tl
from tlutils import smoke


def _counting_loader(n_batches: int, batch: int = 4):
    seen = []
    x = torch.randn(n_batches * batch, 3)
    y = torch.arange(n_batches * batch) % 2

    class Spy(TensorDataset):
        def __getitem__(self, i):
            seen.append(i)
            return super().__getitem__(i)

    return DataLoader(Spy(x, y), batch_size=batch), seen


def test_no_cap_changes_nothing(image_folder, monkeypatch):
    monkeypatch.delenv(smoke.SMOKE_ENV, raising=False)
    assert smoke.cap() is None and smoke.epochs(7) == 7
    data = tl.load_image_folder(image_folder, val_fraction=0.5)
    assert len(data.train) + len(data.val) == 12
    with pytest.raises(ValueError, match="Cannot take 5 images per class"):
        tl.subsample_per_class(data.train, 5)
    loader, seen = _counting_loader(3)
    history = tl.fit(nn.Linear(3, 2), loader, epochs=2, progress=False, device="cpu")
    assert len(history.train_loss) == 2 and len(seen) == 2 * 12


def test_cap_keeps_first_files_per_class_and_trains_two_small_steps(
    image_folder, monkeypatch
):
    monkeypatch.setenv(smoke.SMOKE_ENV, "2")
    assert smoke.cap() == 2 and smoke.epochs(7) == smoke.EPOCHS == 2
    data = tl.load_image_folder(image_folder, val_fraction=0.5)
    files = sorted(
        p
        for s in (data.train, data.val)
        for p, _ in [s.dataset.samples[i] for i in s.indices]
    )
    assert [p.rsplit("/", 1)[1] for p in files] == [
        "b0.jpg",
        "b1.jpg",
        "r0.png",
        "r1.png",
    ]
    assert len(tl.subsample_per_class(data.train, 30)) == 2  # what every class has
    loader, seen = _counting_loader(3)
    history = tl.fit(nn.Linear(3, 2), loader, epochs=5, progress=False, device="cpu")
    assert len(history.train_loss) == 2
    assert (
        len(seen) == 2 * 4
    )  # one batch an epoch loaded, of which BATCH_IMAGES trained
    # a schedule's warm-up fits even on a loader of one batch
    history = tl.fit(nn.Linear(3, 2), loader, epochs=3, schedule="cosine",
                     warmup_steps=1, progress=False, device="cpu")  # fmt: skip
    assert len(history.train_loss) == 2
    assert smoke.BATCH_IMAGES == 2


def test_cap_must_be_positive(monkeypatch):
    monkeypatch.setenv(smoke.SMOKE_ENV, "0")
    with pytest.raises(ValueError, match="TLUTILS_SMOKE_CAP"):
        smoke.cap()
