"""train_folder delivers what the diagnosis measured: phase 1 is its probe, read from the
shared feature cache; fine-tuning starts from it and is kept only if it helps (chapter 5)."""

import numpy as np
import pytest
import torch
from helpers import photo_folder

import tlutils as tl
from tlutils.checkpoint import CutModel
from tlutils.diagnosis import choose_stage
from tlutils.features import fit_probe, stage_features
from tlutils.project import MIN_STEPS, ROUND_STEPS, _rounds

CLASSES = ("cats", "coffee", "rocket", "astronaut")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("tf") / "photos", CLASSES, n=10)


def probe_outputs(folder, stage):
    """The diagnosis's probe of ``stage`` as scikit-learn sees it: decision values on the
    validation images, and their labels."""
    model = tl.create_model().eval()
    tf = tl.create_transform(tl.data_config(model), image_size=64)
    data = tl.load_image_folder(folder, tf, tf)
    train_f, ytr = stage_features(model, data.train, progress=False, device="cpu")
    val_f, yva = stage_features(model, data.val, progress=False, device="cpu")
    _, _, Cs = choose_stage(train_f, ytr.numpy())
    probe = fit_probe(train_f[stage].numpy(), ytr.numpy(), C=Cs[stage])
    return probe.decision_function(val_f[stage].numpy()), yva.numpy(), data


def model_logits(trained, data):
    model = trained.model.eval()
    loader = tl.create_loader(data.val, batch_size=16)
    logits, _ = tl.predict(model, loader, device="cpu")
    return logits.numpy()


@pytest.mark.parametrize("strategy", ["linear_probe", "cut_probe"])
def test_the_probe_strategies_return_exactly_the_probe(
    strategy, folder, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    monkeypatch.setenv(tl.data.CACHE_ENV, str(cache))
    found = tl.diagnose(folder, image_size=64, progress=False, device="cpu")
    cached = sorted((cache / "features").iterdir())
    trained = tl.train_folder(
        folder, strategy=strategy, image_size=64, progress=False, device="cpu"
    )
    # phase 1 read the diagnosis's features: no second pass over the images
    assert sorted((cache / "features").iterdir()) == cached
    stage = found.best_stage if strategy == "cut_probe" else 8
    assert trained.history["stage"] == stage
    assert trained.history["probe_stage"] == found.best_stage
    if strategy == "cut_probe":
        assert isinstance(trained.model, CutModel)
        assert trained.model.cut_stage == stage
    decision, yva, data = probe_outputs(folder, stage)
    logits = model_logits(trained, data)
    assert np.allclose(logits, decision, atol=1e-3)  # the probe's logits, as a network
    assert (logits.argmax(1) == decision.argmax(1)).all()
    # what the saved model gets right is what the probe gets right
    assert trained.history["val_correct"] == (decision.argmax(1) == yva).tolist()
    assert np.mean(trained.history["probe_val_correct"]) == pytest.approx(
        found.val_accuracy
    )
    assert len(trained.history["train_loss"]) == 1  # one row: the probe
    assert trained.against_probe().not_worse
    if strategy == "cut_probe":
        assert trained.against_probe().verdict == "equivalent"


def test_a_fine_tune_that_does_not_help_is_not_kept(folder, tmp_cache):
    """An absurd learning rate ruins the fine-tune's validation loss: the probe stays."""
    trained = tl.train_folder(
        folder, strategy="fine_tune", image_size=64, fine_tune_epochs=1, min_steps=1,
        lr=1.0, batch_size=8, progress=False, device="cpu",
    )  # fmt: skip
    h = trained.history
    assert len(h["val_loss"]) == 2 and h["val_loss"][1] > h["val_loss"][0]
    assert h["best_epoch"] == 0 and h["phase_names"] == ["probe", "fine-tune"]
    decision, _, data = probe_outputs(folder, 8)
    assert np.allclose(model_logits(trained, data), decision, atol=1e-3)
    assert "<- kept" in h["epochs_table"].splitlines()[1]  # row of epoch 0


def test_the_fine_tuning_budget_counts_steps():
    # 24 images in batches of 32: rounds of 10 steps (320 images), at least 50 steps
    assert _rounds(24, 32, epochs=5, min_steps=MIN_STEPS) == (ROUND_STEPS * 32, 5)
    assert _rounds(24, 32, epochs=1, min_steps=MIN_STEPS) == (320, 5)
    assert _rounds(24, 32, epochs=1, min_steps=1) == (320, 1)
    # 20,000 images: a round is an epoch (625 steps), the epochs given are the budget
    assert _rounds(20_000, 32, epochs=5, min_steps=MIN_STEPS) == (20_000, 5)
    assert _rounds(20_000, 32, epochs=2, min_steps=MIN_STEPS) == (20_000, 2)


def test_an_unknown_strategy_is_refused(folder):
    with pytest.raises(ValueError, match="cut_probe"):
        tl.train_folder(folder, strategy="scratch")


def test_cut_model_forward_matches_its_parts():
    model = tl.create_model().eval()
    cut = CutModel(model, 5, 4).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert cut(x).shape == (2, 4)
        assert torch.allclose(cut(x), cut.classifier(cut.pool(cut.body(x))))
