"""tl.evaluate_folder / `tlutils evaluate`: a saved model scored on a labelled folder, with
what error analysis needs (chapter 5)."""

import shutil

import numpy as np
import pytest
import torch
from helpers import photo_folder

import tlutils as tl
from tlutils.checkpoint import trained_model
from tlutils.inference import Evaluation


@pytest.fixture(scope="module")
def model():
    """A Lite0 whose head says 'cats' for every image, surer for some than others."""
    net = tl.create_model()
    tl.replace_head(net, 3)
    with torch.no_grad():
        net.classifier.weight.normal_(0, 0.01)
        net.classifier.bias.copy_(torch.tensor([3.0, 0.0, 0.0]))
    return trained_model(
        net.eval(), ["cats", "coffee", "rocket"], "efficientnet_lite0", 64
    )


def test_scores_by_hand():
    result = Evaluation(
        ["a", "b"], ["1", "2", "3", "4"], [0, 0, 1, 1], [0, 1, 1, 1],
        [0.9, 0.8, 0.7, 0.6], [0.9, 0.2, 0.7, 0.6],
    )  # fmt: skip
    assert result.accuracy == 0.75
    assert result.balanced_accuracy == pytest.approx((0.5 + 1.0) / 2)
    assert result.confusion_matrix().tolist() == [[1, 1], [0, 2]]
    assert result.most_confidently_wrong() == [("2", "a", "b", 0.8)]
    report = result.report()
    assert "accuracy 0.750, balanced accuracy 0.750" in report
    assert "2: a predicted b (0.800)" in report
    assert [r["correct"] for r in result.rows()] == [1, 0, 1, 1]


def test_a_folder_is_scored_and_the_surest_mistakes_come_first(model, tmp_path):
    folder = photo_folder(tmp_path / "labelled", ("cats", "coffee"), n=3)
    result = tl.evaluate_folder(model, folder)
    assert len(result.files) == 6 and sorted(set(result.true)) == [0, 1]
    assert result.predicted == [0] * 6  # the head always says cats
    assert result.accuracy == 0.5 and result.balanced_accuracy == 0.5
    assert result.confusion_matrix().tolist() == [[3, 0, 0], [3, 0, 0], [0, 0, 0]]
    wrong = result.most_confidently_wrong()
    assert [w[1] for w in wrong] == ["coffee"] * 3
    assert [w[3] for w in wrong] == sorted((w[3] for w in wrong), reverse=True)
    # the probability of the true class is the model's, not the top one's
    coffee = [q for q, t in zip(result.true_probability, result.true) if t == 1]
    assert all(q < 0.5 for q in coffee)
    assert len(result.plot().axes) >= 1


def test_a_split_folder_is_scored_on_val_and_unknown_classes_are_named(model, tmp_path):
    root = tmp_path / "split"
    photo_folder(root / "train", ("cats", "coffee"), n=4)
    photo_folder(root / "val", ("cats",), n=2)
    result = tl.evaluate_folder(model, root)
    assert len(result.files) == 2 and all("/val/" in f for f in result.files)
    shutil.copytree(root / "val" / "cats", root / "val" / "dogs")
    with pytest.raises(ValueError, match="unknown: dogs"):
        tl.evaluate_folder(model, root)


def test_nested_images_count_for_their_class(model, tmp_path):
    folder = photo_folder(tmp_path / "labelled", ("cats", "coffee"), n=2)
    nested = folder / "cats" / "more"
    nested.mkdir()
    shutil.copy(folder / "cats" / "0.jpg", nested / "x.jpg")
    result = tl.evaluate_folder(model, folder)
    assert len(result.files) == 5 and np.sum(np.asarray(result.true) == 0) == 3
