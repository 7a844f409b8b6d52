"""The course's one verdict rule (tlutils.verdict), on synthetic cases with known answers."""

import numpy as np
import pytest

from tlutils.verdict import MARGIN, compare, verdict_table


def _drop(correct: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """A copy with k of the correct images turned wrong (a worse arm, paired)."""
    out = correct.copy()
    idx = np.random.default_rng(seed).choice(np.flatnonzero(out), k, replace=False)
    out[idx] = False
    return out


def test_every_draw_agrees_is_better_not_within_noise():
    # Chapter 3's misjudged case: stage 5 minus final from -0.140 to -0.012 on five
    # draws of 250 images was called "within noise" by the old rule.
    rng = np.random.default_rng(1)
    final = rng.random((5, 250)) < 0.85
    stage5 = np.stack([_drop(final[i], k, i) for i, k in enumerate((35, 20, 12, 8, 3))])
    v = compare(stage5, final)
    assert v.verdict == "B better"
    assert v.high < 0 and v.losses == 5
    assert "final is better than stage 5" in v.sentence("stage 5", "final")


def test_one_run_small_difference_with_discordant_images_is_inconclusive():
    # Chapter 3's other case: one deterministic run on 500 images, ahead by 1.8 points,
    # but with images going both ways, is about one standard error: not a finding.
    rng = np.random.default_rng(2)
    a = rng.random(500) < 0.9
    b = a.copy()
    right = np.flatnonzero(a)[:30]
    wrong = np.flatnonzero(~a)[:21]
    b[right], b[wrong] = False, True  # b loses 30 and gains 21: a ahead by 9 images
    v = compare(a, b)
    assert v.difference == pytest.approx(9 / 500)
    assert v.verdict == "inconclusive"
    assert v.low < 0 < v.high


def test_identical_arms_on_many_images_are_equivalent():
    a = np.random.default_rng(3).random(5000) < 0.9
    v = compare(a, a.copy())
    assert v.verdict == "equivalent" and v.not_worse
    assert "equivalent" in v.sentence()


def test_small_sets_cannot_show_equivalence():
    a = np.random.default_rng(4).random(40) < 0.8
    b = _drop(a, 1)
    v = compare(a, b)
    assert v.verdict == "inconclusive"  # 40 images cannot pin a difference to ±1 point


def test_large_difference_is_better_and_symmetric():
    rng = np.random.default_rng(5)
    b = rng.random((3, 1000)) < 0.7
    a = b | (rng.random((3, 1000)) < 0.3)
    v, w = compare(a, b), compare(b, a)
    assert v.verdict == "A better" and w.verdict == "B better"
    assert v.low == pytest.approx(-w.high) and v.high == pytest.approx(-w.low)
    assert "A is better than B" in v.sentence()
    assert "A is better than B" in w.sentence("B", "A")


def test_deterministic_arm_pairs_with_every_seed():
    rng = np.random.default_rng(6)
    probe = rng.random(800) < 0.8
    seeds = np.stack([_drop(probe, 80, s) for s in range(3)])
    v = compare(seeds, probe)
    assert v.runs == 3 and v.verdict == "B better"


def test_accuracies_per_run_resample_runs_only():
    v = compare([[0.80], [0.82], [0.79]], [[0.70], [0.71], [0.72]])
    assert v.verdict == "A better" and v.images == 1 and v.wins == 3


def test_same_inputs_same_interval():
    rng = np.random.default_rng(7)
    a, b = rng.random((4, 300)) < 0.8, rng.random((4, 300)) < 0.8
    assert compare(a, b) == compare(a, b)


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="same validation images"):
        compare(np.ones(10), np.ones(12))
    with pytest.raises(ValueError, match="run by run"):
        compare(np.ones((2, 10)), np.ones((3, 10)))
    with pytest.raises(ValueError, match="non-empty"):
        compare([[]], [[]])
    with pytest.raises(ValueError, match="level"):
        compare(np.ones(3), np.ones(3), level=95)


def test_table_names_the_winner():
    a = np.random.default_rng(8).random(2000) < 0.9
    table = verdict_table([("cut", "probe", compare(a, _drop(a, 200)))])
    assert table.loc[0, "verdict"] == "cut better"
    assert list(table.columns)[-1] == "verdict"
    assert MARGIN == 0.01
