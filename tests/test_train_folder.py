"""train_folder delivers what the diagnosis measured (chapter 5): the probe strategies are
its probe as a network; fine-tuning starts from the probe, runs the course's recipe, stops
trials that fall clearly below the probe, and is kept only if it is at least as good."""

import dataclasses

import numpy as np
import pytest
import torch
from helpers import photo_folder
from PIL import Image

import tlutils as tl
import tlutils.project as project
from tlutils.stages import CutModel

CLASSES = ("cats", "coffee", "rocket", "astronaut")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("tf") / "photos", CLASSES, n=10)


@pytest.fixture(scope="module")
def found(folder, tmp_path_factory):
    """The diagnosis of the folder at 64 px, with its own feature cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv(tl.data.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))
    yield tl.diagnose(folder, image_size=64, progress=False, device="cpu")
    mp.undo()


def with_stage(d, stage):
    """The same diagnosis with another chosen stage (a middle one, as on data unlike
    ImageNet, or the final one)."""
    return dataclasses.replace(
        d, best_stage=stage, choice=dataclasses.replace(d.choice, stage=stage)
    )


def probe_decision(d, stage):
    """The diagnosis's probe of ``stage`` on the validation features."""
    return d.probe(stage).decision_function(d.features.val[stage].numpy())


def logits_of(net, d):
    loader = tl.create_loader(d.data.val, batch_size=16)
    return tl.predict(net.eval(), loader, device="cpu")[0].numpy()


def train(folder, d, **kw):
    return tl.train_folder(
        folder, image_size=64, diagnosis=d, progress=False, device="cpu", **kw
    )


@pytest.mark.parametrize("strategy", ["linear_probe", "cut_probe"])
def test_the_probe_strategies_return_exactly_the_probe(strategy, folder, found):
    trained = train(folder, found, strategy=strategy)
    stage = found.best_stage if strategy == "cut_probe" else 8
    assert trained.history["stage"] == stage
    assert trained.history["probe_stage"] == found.best_stage
    assert isinstance(trained.model, CutModel) == (stage != 8)
    decision = probe_decision(found, stage)
    logits = logits_of(trained.model, found)
    assert np.allclose(logits, decision, atol=1e-3)  # the probe's logits, as a network
    yva = found.features.val_labels
    assert trained.history["val_correct"] == (decision.argmax(1) == yva).tolist()
    assert np.mean(trained.history["probe_val_correct"]) == pytest.approx(
        found.val_accuracy
    )
    assert len(trained.history["train_loss"]) == 1  # one row: the probe
    assert trained.against_probe().not_worse
    # too few validation images to fit a temperature on: none, and the report says so
    assert (
        trained.temperature == 1.0
        and "no temperature" in trained.history["calibration"]
    )


def test_a_diagnosis_of_another_folder_or_size_is_refused(folder, found, tmp_path):
    with pytest.raises(ValueError, match="diagnosis is of"):
        train(tmp_path, found, strategy="linear_probe")
    with pytest.raises(ValueError, match="80 px"):
        tl.train_folder(folder, image_size=80, diagnosis=found, progress=False)


def fake_run(record, ruin=False):
    """A stand-in for the recipe: it records the network it starts from, calls the
    epoch hook once (as an epoch would) and trains nothing, or zeroes every weight."""

    def run(recipe, net, train, val=None, *, on_epoch_end=None, **kw):
        record.append((recipe, logits_of(net, record.d), net))
        if ruin:
            with torch.no_grad():
                for p in net.parameters():
                    p.zero_()
        if on_epoch_end is not None:
            on_epoch_end(0, net)
        return tl.History([0.1], [1.0], [0.0], [1.0], [0.0])

    return run


def every_epoch_run(record):
    """The ruining stand-in, with the epoch hook called after each of the recipe's
    epochs (as a real run calls it)."""
    ruin = fake_run(record, ruin=True)

    def run(recipe, net, train, val=None, *, on_epoch_end=None, **kw):
        history = ruin(recipe, net, train, val)  # recorded once, weights zeroed
        for epoch in range(recipe.epochs):
            if on_epoch_end is not None:
                on_epoch_end(epoch, net)
        return history

    return run


class Record(list):
    d = None


@pytest.mark.parametrize("stage", [8, 5])
def test_fine_tuning_starts_from_the_probe_of_each_candidate(
    stage, folder, found, monkeypatch
):
    """With the final stage chosen, the whole body is the one candidate and (at a given
    rate) trains at once from the final probe; with stage 5, the cut body is a candidate
    too and each is tried on held-out training images first."""
    d = with_stage(found, stage)
    record = Record()
    record.d = d
    monkeypatch.setattr(project, "run", fake_run(record))
    trained = train(folder, d, strategy="fine_tune", lr=1e-4)
    h = trained.history
    if stage == 8:
        assert h["trials"] == [] and len(record) == 1
        recipe, start, net = record[0]
        assert np.allclose(start, probe_decision(d, 8), atol=1e-3)
    else:
        assert {t["candidate"] for t in h["trials"]} == {
            "whole body",
            "cut after stage 5",
        }
        assert all(t["lr"] == 1e-4 for t in h["trials"]) and len(record) == 3
        assert isinstance(record[1][2], CutModel) and record[1][2].cut_stage == 5
        # the final run starts from the probe of the chosen candidate on every image
        recipe, start, net = record[-1]
        chosen = h["stage"]
        assert np.allclose(start, probe_decision(d, chosen), atol=1e-3)
    assert recipe.lr == 1e-4 and recipe.head == "keep" and recipe.epochs == 3
    assert recipe.opt == "adamw" and recipe.schedule == "cosine"
    assert h["phase_names"] == ["probe", "fine-tune"]


def test_a_fine_tune_not_shown_as_good_as_the_probe_is_not_saved(
    folder, found, monkeypatch
):
    d = with_stage(found, 8)
    record = Record()
    record.d = d
    monkeypatch.setattr(project, "run", fake_run(record, ruin=True))
    trained = train(folder, d, strategy="fine_tune", lr=1e-4)
    h = trained.history
    assert h["best_epoch"] == 0 and "the probe is saved" in h["fine_tune_not_kept"]
    assert h["fine_tune_not_kept"] in h["epochs_table"]
    assert h["val_correct"] == h["probe_val_correct"]
    assert np.allclose(logits_of(trained.model, d), probe_decision(d, 8), atol=1e-3)


def test_trials_clearly_below_the_probe_stop_and_nothing_more_is_trained(
    folder, found, monkeypatch
):
    """Not after the first epoch (a dip there recovers): after the second of three."""
    d = with_stage(found, 5)
    record = Record()
    record.d = d
    monkeypatch.setattr(project, "run", every_epoch_run(record))
    trained = train(folder, d, strategy="fine_tune")
    h = trained.history
    assert h["trials"] and all(t["stopped"] and t["epochs"] == 2 for t in h["trials"])
    assert all(t["below_probe_after"] == 1 for t in h["trials"])
    # the grid (1e-4, 3e-4) widened once at its edge: three rates per candidate
    assert len(h["trials"]) == 6
    assert "no trial beat its probe" in h["fine_tune_skipped"]
    assert len(record) == 6  # the trials only: no final run
    assert "stopped: clearly below its probe" in h["trials_table"]
    assert np.allclose(logits_of(trained.model, d), probe_decision(d, 5), atol=1e-3)


def test_trial_curves_run_every_epoch_and_say_when_the_stop_would_fire(
    folder, found, monkeypatch
):
    """``trial_curves`` never stops: each trial runs all its epochs, with the epoch
    after which the early stop of ``train`` would have ended it."""
    d = with_stage(found, 5)
    record = Record()
    record.d = d
    monkeypatch.setattr(project, "run", every_epoch_run(record))
    rows = project.trial_curves(d, rates=(1e-4,), device="cpu")
    assert [r["candidate"] for r in rows] == ["whole body", "cut after stage 5"]
    for r in rows:
        assert not r["stopped"] and r["epochs"] == 3 and len(r["curve"]) == 3
        assert r["below_probe_after"] == 1
        assert r["held_out"] == pytest.approx(r["curve"][-1], abs=1e-4)


def test_flips_that_change_the_class_are_left_out(tmp_path, tmp_cache):
    """Scanned digits (scikit-learn's, real scans): a mirrored 2, 3, 5 or 7 is no longer
    that digit, so the measured augmentation leaves flips out; photos keep them."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        if label in (2, 3, 5, 7) and i < 600:
            folder = tmp_path / "digits" / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (image / 16 * 255).astype(np.uint8)
            Image.fromarray(pixels, "L").resize((48, 48)).save(folder / f"{i}.png")
    d = tl.diagnose(tmp_path / "digits", image_size=48, progress=False, device="cpu")
    y = d.features.train_labels
    fit, held = (np.asarray(r) for r in tl.stratified_split(y.tolist(), 1 / 3, 0))
    augment, why = project._choose_augment(d, fit, held, "cpu")
    assert augment in ("crop", "none") and "flips left out" in why, why


def test_photos_keep_their_flips(folder, found):
    y = found.features.train_labels
    fit, held = (np.asarray(r) for r in tl.stratified_split(y.tolist(), 1 / 3, 0))
    augment, why = project._choose_augment(found, fit, held, "cpu")
    assert augment == "crop_flip", why


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
