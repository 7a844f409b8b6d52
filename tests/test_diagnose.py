"""Loading and diagnosing your own folder: layouts, bad input, measurements (chapter 5)."""

import json
import shutil

import matplotlib
import numpy as np
import pytest
import torch
from helpers import photo_folder, write_image

import tlutils as tl
from tlutils.diagnosis import _similarity
from tlutils.probe import choose_stage
from tlutils.stages import STAGE_NAMES
from tlutils.verdict import compare

matplotlib.use("Agg")


def split_folder(root, classes=("cats", "coffee", "rocket")):
    """root/train/<class> and root/val/<class> made of real photo crops."""
    photo_folder(root / "train", classes, n=8)
    photo_folder(root / "val", classes, n=3, seed=1)
    return root


def test_flat_and_pre_split_folders_give_the_real_classes(tmp_path):
    flat = tl.load_image_folder(photo_folder(tmp_path / "flat"))
    split = tl.load_image_folder(split_folder(tmp_path / "split"))
    for data in (flat, split):
        assert data.classes == ["cats", "coffee", "rocket"]  # not ['train', 'val']
        assert set(tl.targets_of(data.val)) == {0, 1, 2}
    assert len(split.train) == 24 and len(split.val) == 9
    assert tl.is_split_folder(tmp_path / "split")
    assert not tl.is_split_folder(tmp_path / "flat")


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        tl.load_image_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        tl.scan_folder(tmp_path / "nope")


def test_one_class_folder_only(tmp_path):
    photo_folder(tmp_path / "one", classes=("cats",), n=3)
    with pytest.raises(ValueError, match=r"1 class folder\(s\) \(\['cats'\]\)"):
        tl.load_image_folder(tmp_path / "one")


def test_empty_class_folder(tmp_path):
    root = photo_folder(tmp_path / "photos", classes=("cats", "coffee"), n=3)
    (root / "rocket").mkdir()
    (root / "rocket" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="rocket hold no images"):
        tl.load_image_folder(root)


def test_train_and_val_with_different_classes(tmp_path):
    root = split_folder(tmp_path / "split")
    shutil.rmtree(root / "val" / "rocket")
    photo_folder(root / "val", classes=("astronaut",), n=3)
    with pytest.raises(ValueError, match="different class folders"):
        tl.load_image_folder(root)


def test_unreadable_and_truncated_images_are_named_and_skipped(tmp_path):
    root = photo_folder(tmp_path / "photos", classes=("cats", "coffee"), n=5)
    (root / "cats" / "garbage.jpg").write_bytes(b"not an image at all")
    good = (root / "coffee" / "0.jpg").read_bytes()
    (root / "coffee" / "cut.jpg").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="2 unreadable") as caught:
        data = tl.load_image_folder(root, val_fraction=0.4)
    message = str(caught[0].message)
    assert "garbage.jpg" in message and "cut.jpg" in message
    assert len(data.train) + len(data.val) == 10  # every good image kept
    for i in range(len(data.train)):
        data.train[i]  # and every kept one decodes
    scan = tl.scan_folder(root)
    assert sorted(p.rsplit("/", 1)[-1] for p in scan.unreadable) == [
        "cut.jpg",
        "garbage.jpg",
    ]


def test_scan_counts_modes_small_images_and_duplicates(tmp_path):
    root = split_folder(tmp_path / "split", classes=("cats", "coffee"))
    write_image(root / "train" / "cats" / "gray.png", (90, 90, 90), (80, 80), "L")
    write_image(root / "train" / "cats" / "tiny.png", (200, 10, 10), (20, 20))
    write_image(root / "train" / "coffee" / "pal.gif", (10, 10, 200), (80, 80), "P")
    shutil.copy(root / "train" / "cats" / "0.jpg", root / "val" / "cats" / "leak.jpg")
    (root / "train" / "cats" / "README.md").write_text("not an image")
    scan = tl.scan_folder(root)
    assert scan.layout == "split" and scan.classes == ["cats", "coffee"]
    assert scan.counts["train"] == {"cats": 10, "coffee": 9}
    assert scan.counts["val"] == {"cats": 4, "coffee": 3}
    assert scan.modes["L"] == 1 and scan.modes["P"] == 1
    assert [p.rsplit("/", 1)[-1] for p in scan.small] == ["tiny.png"]
    assert scan.ignored == 1
    assert len(scan.across_splits) == 1 and "leak.jpg" in " ".join(
        scan.across_splits[0]
    )
    assert scan.imbalance == pytest.approx(14 / 12)


def pattern(n, share):
    """The best stage right on every image, the other on ``share`` of them."""
    return np.ones(n, dtype=bool), np.arange(n) < round(share * n)


def test_similarity_follows_the_verdict_rule():
    curve = [0.5, 0.7, 0.9, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7]
    best, final = pattern(500, 0.7)  # stage 3 better by 30 points: different data
    similar, why = _similarity(curve, 3, compare(best, final), 0.9)
    assert similar is False and "stage 3" in why and "better" in why
    assert "points" in why and "noise" not in why
    best, final = pattern(20, 0.9)  # 2 of 20 images: the rule cannot tell
    verdict = compare(best, final)
    assert verdict.verdict == "inconclusive"
    assert _similarity(curve, 3, verdict, 0.9)[0] is True  # the head decides
    similar, why = _similarity(curve, 3, verdict, 0.2)
    assert similar is False and "inconclusive" in why
    same = np.ones(3000, dtype=bool)  # identical on 3000 images: equivalent
    similar, why = _similarity(curve, 3, compare(same, same), 0.1)
    assert similar is True and "as good as" in why
    rising = [0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.95]
    assert _similarity(rising, 8, compare(same, same), 0.1)[0] is True


def test_the_old_rule_called_this_within_noise():
    """Issue 21's case: five of five draws agree on a 1-14 point gap (per-image: stage 5
    right on 92%, final on 85% of 1000 images): the verdict rule says better."""
    best, final = pattern(1000, 0.92)[1], pattern(1000, 0.85)[1]
    assert compare(best, final).verdict == "A better"


def test_ties_go_to_the_deeper_stage_in_the_choice_and_the_words():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 12)
    signal = torch.tensor(np.c_[y * 4.0, rng.normal(size=24)], dtype=torch.float32)
    noise = torch.tensor(rng.normal(size=(24, 2)), dtype=torch.float32)
    feats = {0: signal, 1: signal.clone(), 2: noise}  # stages 0 and 1 tie
    choice = choose_stage(feats, y)
    best, correct = choice.stage, choice.correct
    assert best == 1 and len(correct[0]) == 24 and len(choice.Cs) == 3
    assert correct[0].all() and correct[1].all()
    curve = choice.curve()
    why = _similarity(curve, best, compare(correct[best], correct[2]), 0.9)[1]
    assert STAGE_NAMES[1] in why and STAGE_NAMES[0] not in why


def test_diagnose_measures_a_folder(tmp_path, tmp_cache):
    root = photo_folder(tmp_path / "photos", n=10)
    result = tl.diagnose(root, image_size=64, progress=False)
    assert len(result.stage_accuracy) == 9
    assert result.stage_accuracy[result.best_stage] == max(result.stage_accuracy)
    # three different photos, cropped: the best probe tells them apart on validation
    assert result.val_accuracy >= 0.9, result.val_accuracy
    assert set(result.per_class_recall) == {"cats", "coffee", "rocket"}
    assert 0 < result.imagenet_confidence <= 1
    assert 1 / 3 <= result.imagenet_consistency <= 1
    assert result.recommendation.size == "small"  # 8 training images per class
    assert result.train_strategy in tl.project.TRAIN_STRATEGIES
    if result.recommendation.strategy == "linear_probe" and result.best_stage != 8:
        assert result.train_strategy == "cut_probe"  # the probe that was measured
    else:
        assert result.train_strategy == result.recommendation.strategy
    assert result.seconds_per_epoch > 0
    # the same features look for label errors and duplicates: none planted here
    assert result.issues.images == 30 and "## Labels and duplicates" in result.report()
    assert result.stage_verdict.images == 24  # out of fold on the training images
    report = result.report()
    assert "case" in report and "cats 10" in report and "noise" not in report
    best_line = next(line for line in report.splitlines() if "<- best" in line)
    assert best_line.startswith(f"- {STAGE_NAMES[result.best_stage]}:")
    fig = result.plot()
    assert len(fig.axes) == 2


def test_diagnose_on_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tl.diagnose(tmp_path / "nope")


def test_step_time_is_measured_once_per_machine_and_size(tmp_cache):
    from tlutils.diagnosis import _epoch_seconds

    model = tl.create_model(num_classes=2)
    cpu = torch.device("cpu")
    first = _epoch_seconds(model, n_train=40, image_size=32, device=cpu)
    stored = json.loads((tl.data.cache_dir() / "step_seconds.json").read_text())
    assert len(stored) == 1 and first == pytest.approx(list(stored.values())[0] * 2)
    assert _epoch_seconds(model, n_train=40, image_size=32, device=cpu) == first
    (tl.data.cache_dir() / "step_seconds.json").write_text("{damaged")
    assert _epoch_seconds(model, n_train=40, image_size=32, device=cpu) > 0
