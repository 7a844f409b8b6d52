"""Calibration (chapter 5): expected calibration error of known cases, temperature
scaling on synthetic logits of a known temperature and on real held-out logits, the
reliability diagram."""

import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

import tlutils as tl
from tlutils.calibration import (
    TEMPERATURE_BOUNDS,
    Calibration,
    calibration_bins,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_diagram,
    softmax,
)

matplotlib.use("Agg")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def mirror() -> Path:
    """The course's data mirror ($TLUTILS_DATA_MIRROR, or ../shared/data), or skip."""
    root = Path(os.environ.get(tl.data.MIRROR_ENV) or SHARED)
    if not (root / "flowers").is_dir():
        pytest.skip("the course's data mirror is not here")
    return root


def test_ece_of_known_cases():
    # every image right with probability 1: calibrated
    assert expected_calibration_error([[1.0, 0.0]] * 4, [0] * 4) == 0.0
    # 10 images at 0.8, 8 of them right: calibrated
    probs = [[0.8, 0.2]] * 10
    assert expected_calibration_error(probs, [0] * 8 + [1] * 2) == pytest.approx(0)
    # sure and always wrong: the gap is the confidence
    assert expected_calibration_error([[0.9, 0.1]] * 4, [1] * 4) == pytest.approx(0.9)
    # two bins: 0.95 with 1 of 2 right (gap 0.45), 0.6 with 2 of 2 right (gap 0.4)
    probs = [[0.95, 0.05], [0.95, 0.05], [0.4, 0.6], [0.4, 0.6]]
    ece = expected_calibration_error(probs, [0, 1, 1, 1])
    assert ece == pytest.approx((2 * 0.45 + 2 * 0.4) / 4)
    # one bin holds everything: the gap of the means
    assert expected_calibration_error(probs, [0, 1, 1, 1], bins=1) == pytest.approx(
        abs(0.75 - (0.95 + 0.95 + 0.6 + 0.6) / 4)
    )


def test_bins_count_every_image_once_with_edges_included():
    cal = Calibration.from_confidence([0.0, 0.1, 0.5, 0.5001, 1.0], [1, 0, 1, 1, 0], 10)
    assert cal.images == 5 and cal.counts.tolist() == [2, 0, 0, 0, 1, 1, 0, 0, 0, 1]
    assert np.isnan(cal.confidence[1]) and cal.accuracy[0] == 0.5
    cal = calibration_bins([[0.3, 0.7], [0.6, 0.4]], [1, 1], bins=15)
    assert cal.counts.sum() == 2 and np.nansum(cal.accuracy * cal.counts) == 1


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="look like logits"):
        expected_calibration_error([[2.0, -1.0], [0.5, 0.1]], [0, 1])
    with pytest.raises(ValueError, match="from 0 to 1"):
        expected_calibration_error([[0.5, 0.5]], [2])
    with pytest.raises(ValueError, match="one class index per image"):
        expected_calibration_error([[0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError, match="2-D array"):
        expected_calibration_error([0.5, 0.5], [0, 1])
    with pytest.raises(ValueError, match="positive integer"):
        expected_calibration_error([[0.5, 0.5]], [0], bins=0)
    with pytest.raises(ValueError, match="not logits"):
        fit_temperature([[0.9, 0.1], [0.2, 0.8]], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature([[np.nan, 1.0], [0.0, 1.0]], [0, 1])
    with pytest.raises(ValueError, match="positive number"):
        negative_log_likelihood([[1.0, 0.0]], [0], temperature=0)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_fit_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (20000, 5))
    p = softmax(logits, true_t)  # the labels are drawn at the true temperature
    labels = (p.cumsum(1) < rng.random((len(p), 1))).sum(1)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.05)
    nll = negative_log_likelihood(logits, labels, fitted)
    assert nll <= negative_log_likelihood(logits, labels, true_t) + 1e-9
    assert nll < negative_log_likelihood(logits, labels, 1.0)
    # calibrated probabilities: the ECE falls to sampling noise
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, fitted), labels)
    assert after < 0.02 < before


def test_separable_logits_push_the_temperature_to_its_bound():
    logits = np.array([[20.0, 0.0], [0.0, 20.0]] * 5)
    with pytest.warns(UserWarning, match="search bound"):
        t = fit_temperature(logits, [0, 1] * 5)
    assert t == pytest.approx(TEMPERATURE_BOUNDS[0], rel=1e-3)


@pytest.fixture(scope="module")
def flower_logits(tmp_path_factory, pretrained):
    """Logits of real flower photos (3 classes, 18 each, 64 px) from a weakly
    regularised probe (C = 10) fitted on a third of them: ``(part 1, part 2)``, each
    ``(logits, labels)`` of images the probe never saw."""
    from tlutils.features import stage_features
    from tlutils.probe import fit_probe, probe_as_linear

    src, root = mirror() / "flowers", tmp_path_factory.mktemp("flowers")
    for name in ("daisy", "roses", "sunflowers"):
        (root / name).mkdir()
        for file in sorted((src / name).iterdir())[40:58]:
            image = Image.open(file).convert("RGB")
            image.thumbnail((96, 64))
            image.save(root / name / file.name)
    tf = tl.create_transform(tl.data_config(pretrained), image_size=64)
    feats, y = stage_features(
        pretrained, tl.ImageFolder(root, tf), stages=[8], cache=False, progress=False
    )
    x, y = feats[8].numpy(), y.numpy()
    part = np.arange(len(y)) % 3  # every class in every part
    head = probe_as_linear(fit_probe(x[part == 0], y[part == 0], C=10.0))
    with torch.no_grad():
        logits = head(torch.as_tensor(x)).numpy()
    return [(logits[part == k], y[part == k]) for k in (1, 2)]


def test_temperature_lowers_the_loss_on_other_real_held_out_images(flower_logits):
    (fit_z, fit_y), (test_z, test_y) = flower_logits
    t = fit_temperature(fit_z, fit_y)
    assert t > 1.2  # the weakly regularised probe is overconfident
    assert negative_log_likelihood(fit_z, fit_y, t) < negative_log_likelihood(
        fit_z, fit_y
    )
    # on images used neither to train the probe nor to fit the temperature
    before = negative_log_likelihood(test_z, test_y)
    assert negative_log_likelihood(test_z, test_y, t) < 0.8 * before
    assert np.array_equal(softmax(test_z, t).argmax(1), test_z.argmax(1))


def test_reliability_diagram_draws_the_bins_the_diagonal_and_the_ece():
    probs = [[0.95, 0.05], [0.95, 0.05], [0.4, 0.6], [0.4, 0.6]]
    fig = reliability_diagram(probs, [0, 1, 1, 1], bins=10)
    ax = fig.axes[0]
    ece = expected_calibration_error(probs, [0, 1, 1, 1], bins=10)
    assert ax.get_title() == f"ECE {ece:.3f} (4 images)"
    accuracy, gap = ax.containers  # one accuracy bar and one gap bar per full bin
    assert [round(b.get_height(), 6) for b in accuracy] == [1.0, 0.5]
    assert [round(b.get_height(), 6) for b in gap] == [-0.4, 0.45]
    diagonal = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert [list(d.get_xdata()) for d in diagonal] == [[0, 1]]
    assert sorted(t.get_text() for t in ax.texts) == ["2", "2"]  # images per bin
    matplotlib.pyplot.close(fig)
