"""train_folder delivers what the diagnosis measured: phase 1 is its probe, read from the
shared feature cache; fine-tuning starts from it and is kept only if it helps (chapter 5)."""

import copy
from types import SimpleNamespace

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


@pytest.mark.parametrize("chosen", [None, 5])
def test_fine_tuning_starts_from_the_diagnosis_probe(
    chosen, folder, tmp_cache, monkeypatch
):
    """Phase 2 fine-tunes the network the chosen stage's probe sits on (a cut body when
    that stage is not the final one), so round 0 is the model the diagnosis promised.
    ``chosen=5`` makes the choice fall on stage 5, as it does on folders unlike ImageNet."""
    import tlutils.project as project

    if chosen is not None:
        choose = project.choose_stage
        monkeypatch.setattr(
            project, "choose_stage", lambda *a: (chosen, *choose(*a)[1:])
        )
    started = {}

    def no_fine_tune(
        net, *args, **kwargs
    ):  # record where phase 2 starts, train nothing
        started["net"] = copy.deepcopy(net)
        return tl.History([9.0], [0.0], [9.0], [0.0], [0.0])

    monkeypatch.setattr(project.finetune, "fine_tune", no_fine_tune)
    trained = tl.train_folder(
        folder, strategy="fine_tune", image_size=64, progress=False, device="cpu"
    )
    stage = trained.history["probe_stage"]
    assert trained.history["stage"] == stage and stage == (chosen or stage)
    net = started["net"]
    assert isinstance(net, CutModel) == (stage != 8)
    decision, _, data = probe_outputs(folder, stage)
    logits = model_logits(SimpleNamespace(model=net), data)
    assert np.allclose(logits, decision, atol=1e-3)  # round 0: the diagnosis's probe


def test_a_fine_tune_not_shown_as_good_as_the_probe_is_not_saved(
    folder, tmp_cache, monkeypatch
):
    """A round with a lower validation loss is still not saved unless the verdict rule
    finds it at least as good as the probe (within a point) on the validation images."""
    import tlutils.project as project

    def ruin_the_head(net, *args, **kwargs):  # a "fine-tune" that loses accuracy
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
        return tl.History([0.1], [1.0], [0.0], [1.0], [0.0])  # claims a val loss of 0

    monkeypatch.setattr(project.finetune, "fine_tune", ruin_the_head)
    trained = tl.train_folder(
        folder, strategy="fine_tune", image_size=64, progress=False, device="cpu"
    )
    h = trained.history
    assert h["best_epoch"] == 0 and "the probe is saved" in h["fine_tune_not_kept"]
    assert h["fine_tune_not_kept"] in h["epochs_table"]
    assert h["val_correct"] == h["probe_val_correct"]
    assert trained.against_probe().verdict == "equivalent"


def test_choose_stage_is_not_fitted_twice_on_the_same_features(monkeypatch):
    import tlutils.diagnosis as diagnosis

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 12)
    feats = {s: torch.tensor(rng.normal(size=(24, 4)) + y[:, None] * s) for s in (1, 2)}
    calls = []
    fit = diagnosis._stage_correct
    monkeypatch.setattr(
        diagnosis, "_stage_correct", lambda *a: calls.append(1) or fit(*a)
    )
    first = choose_stage(feats, y, seed=0)
    again = choose_stage(feats, y, seed=0)
    assert len(calls) == 1 and first[0] == again[0] and first[2] == again[2]
    feats[2] = feats[2] + 1e-3  # other features: chosen afresh
    choose_stage(feats, y, seed=0)
    choose_stage(feats, y, seed=1)
    assert len(calls) == 3


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
