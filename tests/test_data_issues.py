"""Label problems and duplicates (chapter 5): planted in a copy of real flower photos,
found from Lite0's features; the confident-learning rule by hand; the figure."""

import os
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

import tlutils as tl
from tlutils.data_issues import (
    DUPLICATE_THRESHOLD,
    dataset_files,
    find_data_issues,
    find_duplicates,
    find_label_issues,
    out_of_fold_probabilities,
    plot_data_issues,
)
from tlutils.features import stage_features

matplotlib.use("Agg")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSES = ("daisy", "roses", "sunflowers")


def mirror() -> Path:
    """The course's data mirror ($TLUTILS_DATA_MIRROR, or ../shared/data), or skip."""
    root = Path(os.environ.get(tl.data.MIRROR_ENV) or SHARED)
    if not (root / "flowers").is_dir():
        pytest.skip("the course's data mirror is not here")
    return root


def small_copy(src: Path, dst: Path, side: int = 96) -> None:
    """``src`` resized so that its shorter side is ``side`` pixels, saved as ``dst``."""
    image = Image.open(src).convert("RGB")
    scale = side / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)))
    dst.parent.mkdir(parents=True, exist_ok=True)
    image.save(dst, quality=90)


def planted_folder(root: Path) -> dict:
    """16 real flower photos per class (96 px), split 12/4 into train/val, with 3
    mislabels (moved to another class) and 3 duplicates (an identical file within a
    class, a re-encoded copy under another class, an enlarged copy in val)."""
    src = mirror() / "flowers"
    for name in CLASSES:
        for i, file in enumerate(sorted((src / name).iterdir())[:16]):
            part = "val" if i % 4 == 3 else "train"
            small_copy(file, root / part / name / file.name)
    train = root / "train"
    moved = {}  # new path -> the class it came from
    for a, b in zip(CLASSES, CLASSES[1:] + CLASSES[:1]):
        file = sorted((train / a).iterdir())[0]
        moved[str(shutil.move(file, train / b / f"moved_{file.name}"))] = a
    exact = sorted((train / "daisy").iterdir())[2]
    shutil.copy(exact, train / "daisy" / "copy_exact.jpg")
    across = sorted((train / "roses").iterdir())[3]
    Image.open(across).save(train / "sunflowers" / "copy_across.jpg", quality=60)
    leak = sorted((train / "sunflowers").iterdir())[4]
    image = Image.open(leak)
    bigger = image.resize((image.width * 5 // 4, image.height * 5 // 4))
    bigger.save(root / "val" / "sunflowers" / "copy_leak.jpg", quality=85)
    pairs = {
        "within a class": {str(exact), str(train / "daisy" / "copy_exact.jpg")},
        "across classes": {str(across), str(train / "sunflowers" / "copy_across.jpg")},
        "across train and val": {str(leak), str(root / "val/sunflowers/copy_leak.jpg")},
    }
    return {"moved": moved, "pairs": pairs}


@pytest.fixture(scope="module")
def planted(tmp_path_factory, pretrained):
    """The planted folder, its stage features at 96 px and what find_data_issues
    finds."""
    root = tmp_path_factory.mktemp("planted")
    truth = planted_folder(root)
    tf = tl.create_transform(tl.data_config(pretrained), image_size=96)
    data = tl.load_image_folder(root, tf, tf)
    feats, labels, files = {}, {}, {}
    for part in ("train", "val"):
        dataset = getattr(data, part)
        feats[part], y = stage_features(
            pretrained, dataset, cache=False, progress=False
        )
        labels[part], files[part] = y.numpy(), dataset_files(dataset)
    issues = find_data_issues(feats, labels, files, data.classes)
    found = {"issues": issues, "feats": feats, "labels": labels, "files": files}
    return {**truth, **found, "classes": data.classes}


def test_planted_mislabels_are_found_with_their_true_class(planted):
    suspects = {s.file: s for s in planted["issues"].label_issues}
    found = [f for f in planted["moved"] if f in suspects]
    assert len(found) >= 2  # most of the 3 planted mislabels
    for file in found:
        assert suspects[file].probability > suspects[file].given_probability
    # the class they came from is suggested for most (a white rose may look like a
    # daisy to a probe trained on 12 images per class)
    right = [f for f in found if suspects[f].suggested == planted["moved"][f]]
    assert len(right) >= max(1, len(found) - 1)
    # the copy under the wrong class is a wrong label too; it and its original are
    # the two sides of one contradiction
    explained = set(planted["moved"]) | planted["pairs"]["across classes"]
    false_alarms = [f for f in suspects if f not in explained]
    assert len(false_alarms) <= 5  # of 51 images
    margins = [s.margin for s in planted["issues"].label_issues]
    assert margins == sorted(margins, reverse=True)


def test_planted_duplicates_are_found_with_their_problem(planted):
    groups = planted["issues"].duplicates
    for problem, pair in planted["pairs"].items():
        holding = [g for g in groups if pair <= set(g.files)]
        assert len(holding) == 1, f"the planted pair {problem} was not found"
        assert holding[0].problems == [problem]
    exact = next(
        g for g in groups if planted["pairs"]["within a class"] <= set(g.files)
    )
    assert exact.identical and exact.kind == "identical files"
    leak = next(
        g for g in groups if planted["pairs"]["across train and val"] <= set(g.files)
    )
    assert not leak.identical and leak.lowest >= DUPLICATE_THRESHOLD
    assert sorted(leak.splits) == ["train", "val"] and "leakage" in leak.reason
    planted_files = set().union(*planted["pairs"].values())
    assert len([g for g in groups if not set(g.files) & planted_files]) <= 1
    # the worst problems come first
    assert groups[0].problems == ["across train and val"]


def test_the_report_and_the_figure_name_the_files(planted):
    issues = planted["issues"]
    text = issues.report()
    assert text.startswith("## Labels and duplicates")
    flagged = {s.file for s in issues.label_issues}
    assert all(f in text for f in planted["moved"] if f in flagged)
    assert "copy_leak.jpg" in text and "leakage" in text
    rows = issues.rows()
    assert len(rows) == len(issues.label_issues) + sum(
        len(g.files) for g in issues.duplicates
    )
    leak = [r for r in rows if r["file"].endswith("copy_leak.jpg")]
    assert [r["problem"] for r in leak] == ["duplicate: across train and val"]
    fig = plot_data_issues(issues, n_labels=4, n_groups=3, ncols=4)
    shown = [ax for ax in fig.axes if ax.images]
    members = sum(min(4, len(g.files)) for g in issues.duplicates[:3])
    assert len(shown) == min(4, len(issues.label_issues)) + members
    titles = [ax.get_title() for ax in shown]
    assert sum(t.startswith("given ") for t in titles) == min(
        4, len(issues.label_issues)
    )
    assert any(t.startswith("group 1: ") for t in titles)
    assert any("copy_leak.jpg" in t for t in titles)
    matplotlib.pyplot.close(fig)


def test_out_of_fold_probabilities_come_from_probes_that_did_not_see_the_image(
    planted,
):
    x = planted["feats"]["train"][8]
    y = planted["labels"]["train"]
    oof = out_of_fold_probabilities(x, y, C=1.0)
    assert oof.shape == (len(y), 3) and np.allclose(oof.sum(1), 1)
    seen = tl.probe.fit_probe(x, y, C=1.0).predict_proba(x.numpy())
    own = np.arange(len(y)), y
    assert oof[own].mean() < seen[own].mean()  # a probe is surer of what it saw
    with pytest.raises(ValueError, match="at least 2 images"):
        out_of_fold_probabilities(x[:5], np.array([0, 0, 1, 1, 2]))
    with pytest.raises(ValueError, match="one label per image"):
        out_of_fold_probabilities(x, y[:-1])


def test_the_confident_learning_rule_by_hand():
    # thresholds: class 0 images average p0 = (0.9 + 0.7 + 0.2) / 3 = 0.6,
    # class 1 images average p1 = (0.8 + 0.6 + 0.55) / 3 = 0.65
    p = np.array(
        [
            [0.9, 0.1],
            [0.7, 0.3],
            [0.2, 0.8],  # labelled 0
            [0.2, 0.8],
            [0.4, 0.6],
            [0.45, 0.55],
        ]  # fmt: skip
    )
    y = [0, 0, 0, 1, 1, 1]
    issues = find_label_issues(p, y, [f"f{i}" for i in range(6)], ["cat", "dog"])
    # f2: dog 0.8 >= 0.65 and above cat 0.2. f4 and f5: cat 0.4 and 0.45 are below
    # cat's threshold 0.6, so they stay, though unsure.
    assert [(i.file, i.given, i.suggested) for i in issues] == [("f2", "cat", "dog")]
    assert issues[0].threshold == pytest.approx(0.65)
    assert issues[0].margin == pytest.approx(0.6)
    # thresholds 0.7 and 0.475: f0's dog 0.5 reaches dog's threshold but does not
    # exceed its given cat 0.5, so it is no suspect
    p = np.array([[0.5, 0.5], [0.9, 0.1], [0.55, 0.45], [0.5, 0.5]])
    assert find_label_issues(p, [0, 0, 1, 1]) == []
    with pytest.raises(ValueError, match="rows summing to 1"):
        find_label_issues(np.array([[2.0, 1.0]]), [0])


def test_duplicates_bad_input(planted):
    feats = planted["feats"]["train"]
    files = planted["files"]["train"]
    with pytest.raises(ValueError, match="one file per image"):
        find_duplicates(feats, files[:-1])
    with pytest.raises(ValueError, match="cosine similarity in"):
        find_duplicates(feats, files, threshold=1.5)
    with pytest.raises(ValueError, match="same parts"):
        find_data_issues(
            {"train": feats}, {"val": planted["labels"]["train"]},
            {"train": files}, planted["classes"],
        )  # fmt: skip
    # one tensor works as well as a {stage: tensor} mapping; identical rows are found
    x = torch.cat([feats[8][:3], feats[8][:1]])
    groups = find_duplicates(x, ["a", "b", "c", "d"], exact=False)
    assert [g.files for g in groups] == [["a", "d"]]
