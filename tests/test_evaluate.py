"""tl.evaluate_folder / `tlutils evaluate`: a saved model scored on a labelled folder,
with what error analysis needs: report, calibration, temperature, figures
(chapter 5)."""

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


EUROSAT = [
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
]  # fmt: skip


def test_the_report_of_ten_classes_fits_100_columns():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 10, 3000).tolist()
    predicted = [t if rng.random() < 0.8 else int(rng.integers(0, 10)) for t in true]
    root = "/data/projects/satellite/labelled"
    files = [f"{root}/{EUROSAT[t]}/tile_{i:05d}.jpg" for i, t in enumerate(true)]
    confidence = rng.uniform(0.5, 1.0, 3000).round(6).tolist()
    result = Evaluation(EUROSAT, files, true, predicted, confidence, [0.1] * 3000)
    lines = result.report().splitlines()
    assert max(len(line) for line in lines) <= 100
    start = lines.index("confusion matrix (rows: true class, columns: predicted class)")
    header, rows = lines[start + 1], lines[start + 2 : start + 12]
    codes = header.split()
    assert len(codes) == 10
    assert all(len(c) < len(n) or c == n for c, n in zip(codes, EUROSAT))
    for name, row, counts in zip(EUROSAT, rows, result.confusion_matrix()):
        assert row.startswith(name) and row.split()[1:] == [str(v) for v in counts]
    key = " ".join(line for line in lines if line.startswith(("key: ", "     ")))
    for code, name in zip(codes, EUROSAT):
        assert code == name or f"{code} = {name}" in key
    assert f"expected calibration error {result.ece:.3f}" in lines[1]
    # the surest mistakes are named under their shared folder
    assert "(files under /data/projects/satellite/labelled)" in result.report()


def test_the_temperature_divides_the_logits_and_the_logits_are_kept(model, tmp_path):
    import copy

    from tlutils.calibration import expected_calibration_error, softmax

    folder = photo_folder(tmp_path / "labelled", ("cats", "coffee"), n=3)
    plain = tl.evaluate_folder(model, folder)
    assert plain.temperature == 1.0 and np.asarray(plain.logits).shape == (6, 3)
    hot = copy.copy(model)
    hot.temperature = 2.0  # what `train` stores in the checkpoint
    warm = tl.evaluate_folder(hot, folder)
    assert warm.temperature == 2.0 and warm.predicted == plain.predicted
    assert np.allclose(warm.logits, plain.logits, atol=1e-5)
    assert np.allclose(warm.confidence, softmax(plain.logits, 2.0).max(1), atol=1e-5)
    assert all(w < p for w, p in zip(warm.confidence, plain.confidence))  # softer
    redone = plain.with_temperature(2.0)
    assert np.allclose(redone.confidence, warm.confidence, atol=1e-5)
    assert warm.ece == pytest.approx(
        expected_calibration_error(warm.probabilities(), warm.true)
    )
    rows = tl.predict_images(hot, folder, top_k=3)
    assert [r.file for r in rows] == warm.files
    assert np.allclose([r.probabilities[0] for r in rows], warm.confidence, atol=1e-5)
    cold = tl.predict_images(hot, folder, top_k=3, temperature=1.0)
    assert np.allclose([r.probabilities[0] for r in cold], plain.confidence, atol=1e-5)
    t = plain.fit_temperature()
    assert t > 1  # half the images are wrong, some at 0.9: softer is better
    assert plain.with_temperature(t).ece < plain.ece
    hot.temperature = 0.0
    with pytest.raises(ValueError, match="positive number"):
        tl.predict_images(hot, folder)
    by_hand = Evaluation(["a", "b"], ["1"], [0], [0], [0.9], [0.9])
    with pytest.raises(ValueError, match="no logits"):
        by_hand.with_temperature(2.0)


def test_error_figures_show_the_right_things(model, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from tlutils.errors import plot_confusion, save_error_figures

    folder = photo_folder(tmp_path / "labelled", ("cats", "coffee"), n=3)
    result = tl.evaluate_folder(model, folder)
    fig = result.plot_confusion()
    counts, shares = fig.axes
    assert [t.get_text() for t in counts.texts] == ["3", "0", "0", "3", "0", "0"] + [
        "0"
    ] * 3
    assert [t.get_text() for t in shares.texts] == ["1.00", "0", "0", "1.00", "0", "0"]
    assert [t.get_text() for t in counts.get_xticklabels()] == result.classes
    # long names are cut, still unique, and rotated
    fig = plot_confusion([0, 1, 2], [0, 2, 2], ["a" * 20 + "x", "a" * 20 + "y", "b"])
    names = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert names == ["aaaaaaaaaaaaa1", "aaaaaaaaaaaaa2", "b"]
    assert fig.axes[0].get_xticklabels()[0].get_rotation() == 45
    with pytest.raises(ValueError, match="from 0 to 2"):
        plot_confusion([0, 3], [0, 1], ["a", "b", "c"])
    fig = result.plot_mistakes(n=2)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 2
    for ax in shown:
        assert ax.get_title().startswith("true coffee, p ")
        assert "\npredicted cats " in ax.get_title()
    lowest = sorted(q for q, t in zip(result.true_probability, result.true) if t == 1)
    assert f"p {lowest[0]:.2f}" in shown[0].get_title()
    ax = result.reliability_diagram().axes[0]
    assert ax.get_title().startswith(f"ECE {result.ece:.3f} at temperature 1")
    paths = save_error_figures(result, tmp_path / "figures")
    assert sorted(paths) == ["confusion", "mistakes", "reliability"]
    assert all(p.suffix == ".png" and p.stat().st_size > 1000 for p in paths.values())
    with pytest.raises(NotADirectoryError, match="is a file"):
        save_error_figures(result, paths["confusion"])
    perfect = Evaluation(["a", "b"], ["1", "2"], [0, 1], [0, 1], [0.9, 0.8], [0.9, 0.8])
    assert "no mistakes" in perfect.plot_mistakes().axes[0].texts[0].get_text()
    matplotlib.pyplot.close("all")


def test_show_batch_shows_what_the_transform_feeds_the_network(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from torchvision import transforms

    from tlutils.errors import show_batch

    folder = photo_folder(tmp_path / "photos", ("cats", "coffee"), n=4)
    config = {
        "input_size": (3, 64, 64),
        "mean": (0.4, 0.5, 0.6),
        "std": (0.2, 0.3, 0.1),
        "interpolation": "bilinear",
        "crop_pct": 0.875,
    }
    train = tl.ImageFolder(folder, tl.create_transform(config, train=True))
    state = torch.random.get_rng_state()
    fig = show_batch(train, n=4, seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # yours is untouched
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 4
    assert all(ax.get_title().split()[0] in ("cats", "coffee") for ax in shown)
    assert "RandomResizedCrop" in fig._suptitle.get_text()
    pixels = [ax.images[0].get_array() for ax in shown]
    assert all(p.shape == (64, 64, 3) and p.min() >= 0 and p.max() <= 1 for p in pixels)
    # the normalisation is undone: the evaluation transform shows the plain image
    plain = tl.ImageFolder(folder, tl.create_transform(config))
    fig = show_batch(plain, n=1, seed=0)
    index = int(fig.axes[0].get_title().split("#")[1])
    image = tl.load_rgb(plain.samples[index][0])
    expected = transforms.Compose(
        plain.transform.transforms[:2] + [transforms.ToTensor()]
    )
    want = expected(image).permute(1, 2, 0).numpy()
    assert np.allclose(fig.axes[0].images[0].get_array(), want, atol=1e-5)
    # one image drawn several times shows the spread of the augmentation
    fig = show_batch(train, n=3, same_image=True)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert len({t.split()[0] for t in titles}) == 1
    arrays = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert not np.allclose(arrays[0], arrays[1])
    matplotlib.pyplot.close("all")


class LooksTopLeft(torch.nn.Module):
    """A two-class 'model' that decides from the top-left quarter of the image alone."""

    def forward(self, x):
        score = x[:, :, : x.shape[2] // 2, : x.shape[3] // 2].mean((1, 2, 3))
        return torch.stack([-score, score], 1) * 2


def test_occlusion_finds_where_the_evidence_is():
    image = torch.zeros(3, 32, 32)
    image[:, :16, :16] = 1.0  # the evidence for class 1, top left
    heat = tl.errors.occlusion_map(LooksTopLeft(), image, target=1, patch=8, stride=4)
    assert heat.shape == (32, 32)
    assert heat[:12, :12].mean() > 0.01 and heat[20:, 20:].abs().max() < 1e-6
    with pytest.raises(ValueError, match="one image"):
        tl.errors.occlusion_map(LooksTopLeft(), image[None], target=1)


def test_occlusion_maps_of_a_real_model_draw(model, tmp_path):
    folder = photo_folder(tmp_path / "photos", classes=("coffee",), n=2)
    files = sorted(str(p) for p in folder.rglob("*.*"))
    fig = tl.errors.plot_occlusion(model, files)
    assert len([ax for ax in fig.axes if ax.images]) == 2
    assert all(len(ax.images) == 2 for ax in fig.axes if ax.images)  # image and heat
