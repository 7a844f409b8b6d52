"""The course's one verdict rule (tlutils.verdict), on synthetic cases with known
answers."""

import itertools

import numpy as np
import pytest

from tlutils.verdict import (
    MARGIN,
    OUTCOMES,
    Verdict,
    classify,
    compare,
    verdict_table,
)

EPS = 1e-9  # a hair, as a fraction


def _verdict(low: float, high: float, runs: int = 1, wins: int = 0, losses: int = 0):
    """A Verdict for the interval [low, high] in points (its outcome by the rule)."""
    low, high = low / 100, high / 100
    return Verdict(
        difference=(low + high) / 2,
        low=low,
        high=high,
        verdict=classify(low, high),
        runs=runs,
        images=500,
        wins=wins,
        losses=losses,
    )


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
    assert v.verdict == "inconclusive" and not v.sure
    assert v.low < 0 < v.high
    assert "can't tell" in v.sentence() and "too wide" not in v.sentence()


def test_identical_arms_on_many_images_are_equivalent():
    a = np.random.default_rng(3).random(5000) < 0.9
    v = compare(a, a.copy())
    assert v.verdict == "equivalent" and v.not_worse and v.sure
    assert not v.a_better and not v.b_better
    assert v.sentence() == (
        "A and B are equivalent: A minus B is +0.0 to +0.0 points (95% interval), "
        "inside ±1 point"
    )


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
    assert v.a_better and w.b_better and not v.b_better and not w.a_better
    assert v.sentence().startswith("A is better than B by ")
    assert w.sentence("B", "A").startswith("A is better than B by ")
    assert "ahead in 3 of 3 runs" in v.sentence()
    assert "ahead in 3 of 3 runs" in w.sentence("B", "A")


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


# The outcomes, decided from the interval alone (classify), at their boundaries.
# Intervals in points; the margin is 1 point.
CASES = [
    # (low, high, outcome)
    (1.2, 3.0, "A better"),
    (EPS, 1.0, "A better"),  # reaches the margin exactly
    (1.5, 9.0, "A better"),  # wholly beyond the margin
    (EPS, 1.0 - EPS, "A slightly better"),
    (0.2, 0.8, "A slightly better"),
    (0.04, 0.3, "A slightly better"),  # "+0.0 to +0.3" with the low end above 0
    (-0.04, 0.3, "equivalent"),  # "-0.0 to +0.3": the issue's flip, now equivalent
    (0.0, 0.3, "equivalent"),  # low end exactly 0: not above 0
    (-0.3, 0.0, "equivalent"),
    (0.0, 0.0, "equivalent"),
    (-0.4, 0.3, "equivalent"),
    (-1.0 + EPS, 1.0 - EPS, "equivalent"),
    (-0.8, -0.2, "B slightly better"),
    (-1.0 + EPS, -EPS, "B slightly better"),
    (-1.0, -EPS, "B better"),
    (-3.0, -1.2, "B better"),
    (-0.2, 1.6, "inconclusive"),  # the issue's narrow interval straddling 0
    (-0.2, 1.0, "inconclusive"),  # reaches the margin exactly
    (-1.0, 0.2, "inconclusive"),
    (-4.5, 0.8, "inconclusive"),
    (-2.0, 7.0, "inconclusive"),
    (0.0, 1.0, "inconclusive"),
]


@pytest.mark.parametrize("low, high, outcome", CASES)
def test_classify_names_one_outcome_at_each_boundary(low, high, outcome):
    assert classify(low / 100, high / 100) == outcome
    assert classify(low / 100, high / 100, margin=MARGIN) == outcome


def _holds(low: float, high: float, m: float) -> dict[str, bool]:
    """The brief's definitions, written independently of classify."""
    straddles = low <= 0 <= high
    return {
        "A better": low > 0 and high >= m,
        "A slightly better": low > 0 and high < m,
        "equivalent": straddles and -m < low and high < m,
        "B slightly better": high < 0 and low > -m,
        "B better": high < 0 and low <= -m,
        "inconclusive": straddles and (low <= -m or high >= m),
    }


def test_exactly_one_outcome_holds_for_any_interval():
    m = MARGIN
    edges = [0.0, m / 2, m, 3 * m]
    ends = sorted({s * (e + d) for e in edges for d in (-EPS, 0, EPS) for s in (1, -1)})
    rng = np.random.default_rng(0)
    random_ends = rng.normal(0, 2 * m, size=(2000, 2))
    pairs = itertools.chain(
        itertools.combinations_with_replacement(ends, 2),
        (tuple(sorted(p)) for p in random_ends),
    )
    seen = set()
    for low, high in pairs:
        holding = [name for name, ok in _holds(low, high, m).items() if ok]
        assert len(holding) == 1, (low, high, holding)
        assert classify(low, high, m) == holding[0], (low, high)
        seen.add(holding[0])
    assert seen == set(OUTCOMES)


def test_a_zero_margin_leaves_no_room_for_equivalence():
    assert classify(0.0, 0.0, margin=0.0) == "inconclusive"
    assert classify(EPS, EPS, margin=0.0) == "A better"
    assert classify(-EPS, -EPS, margin=0.0) == "B better"


def test_classify_and_verdict_refuse_what_is_not_an_interval_or_not_its_outcome():
    with pytest.raises(ValueError, match="low <= high"):
        classify(0.02, 0.01)
    with pytest.raises(ValueError, match="low <= high"):
        classify(float("nan"), 0.01)
    with pytest.raises(ValueError, match="margin"):
        classify(0.0, 0.01, margin=-0.01)
    with pytest.raises(ValueError, match="'equivalent', not 'A better'"):
        Verdict(0.001, -0.0004, 0.003, "A better", 1, 500, 1, 0)


def test_the_issue_cases_read_as_they_are():
    flip = _verdict(-0.04, 0.3)  # retrain top 1 (large): "-0.0 to +0.3"
    assert flip.verdict == "equivalent" and flip.interval() == "-0.0 to +0.3 points"
    assert flip.sentence() == (
        "A and B are equivalent: A minus B is -0.0 to +0.3 points (95% interval), "
        "inside ±1 point"
    )
    hair = _verdict(0.04, 0.3, runs=3, wins=3)
    assert hair.verdict == "A slightly better" and hair.a_better
    assert hair.sentence() == (
        "A is better than B, but by less than a point: 0.2 points "
        "(95% interval +0.0 to +0.3 points; ahead in 3 of 3 runs)"
    )
    narrow = _verdict(-0.2, 1.6)
    assert narrow.verdict == "inconclusive"
    assert narrow.sentence("fine-tuning", "the probe") == (
        "can't tell (inconclusive): fine-tuning minus the probe is -0.2 to +1.6 points "
        "(95% interval), which includes 0 and reaches beyond +1 point: fine-tuning may "
        "be as good as the probe or better"
    )


@pytest.mark.parametrize(
    "low, high, expected",
    [
        (
            1.2,
            3.0,
            "cut is better than probe by 2.1 points (95% interval +1.2 to +3.0 "
            "points; ahead in 3 of 3 runs)",
        ),
        (
            0.2,
            0.8,
            "cut is better than probe, but by less than a point: 0.5 points "
            "(95% interval +0.2 to +0.8 points; ahead in 3 of 3 runs)",
        ),
        (
            -0.8,
            -0.2,
            "probe is better than cut, but by less than a point: 0.5 points "
            "(95% interval +0.2 to +0.8 points; ahead in 2 of 3 runs)",
        ),
        (
            -3.0,
            -1.2,
            "probe is better than cut by 2.1 points (95% interval +1.2 to "
            "+3.0 points; ahead in 2 of 3 runs)",
        ),
        (
            -1.6,
            0.2,
            "can't tell (inconclusive): cut minus probe is -1.6 to +0.2 points "
            "(95% interval), which includes 0 and reaches beyond -1 point: probe may "
            "be as good as cut or better",
        ),
        (
            -2.0,
            7.0,
            "can't tell (inconclusive): cut minus probe is -2.0 to +7.0 points "
            "(95% interval), which includes 0 and reaches beyond both -1 and +1 point: "
            "either cut or probe may be better",
        ),
    ],
)
def test_each_sentence_says_what_its_interval_means(low, high, expected):
    wins, losses = (3, 0) if low > 0 else (1, 2)
    v = _verdict(low, high, runs=3, wins=wins, losses=losses)
    assert v.sentence("cut", "probe") == expected


def test_one_run_has_no_run_count_and_words_follow_the_margin():
    v = _verdict(0.2, 0.8)
    assert "runs" not in v.sentence()
    half = Verdict(0.004, 0.001, 0.007, "A better", 1, 500, 1, 0, margin=0.005)
    assert half.sentence().startswith("A is better than B by 0.4 points")
    wide = Verdict(0.004, 0.001, 0.007, "A slightly better", 1, 500, 1, 0, margin=0.02)
    assert "by less than 2 points:" in wide.sentence()
    assert wide.label() == "A slightly better (by < 2 points)"


def test_not_worse_is_the_same_interval_read_for_non_inferiority():
    reading = {
        (1.2, 3.0): True,
        (0.2, 0.8): True,
        (-0.4, 0.3): True,
        (-0.8, -0.2): True,  # B slightly better: worse, but by less than the margin
        (-0.2, 1.6): True,  # inconclusive, but not below -1 point
        (-1.0, 0.2): False,  # reaches -1 point exactly
        (-3.0, -1.2): False,
    }
    for (low, high), expected in reading.items():
        v = _verdict(low, high)
        assert v.not_worse is expected, (low, high)
        said = v.not_worse_sentence("the model", "the probe")
        assert said.startswith(
            "the model is not worse than the probe (at least as good, within 1 point)"
            if expected
            else "the model may be worse than the probe by 1 point or more"
        )
        assert f"the model minus the probe is {v.interval()}" in said


def test_every_outcome_has_its_own_table_words():
    intervals = [(1.2, 3.0), (0.2, 0.8), (-0.4, 0.3), (-0.8, -0.2), (-3.0, -1.2)]
    inconclusive = [(-0.2, 1.6), (-1.6, 0.2), (-2.0, 7.0)]
    verdicts = [_verdict(lo, hi) for lo, hi in intervals + inconclusive]
    assert [v.verdict for v in verdicts[:6]] == list(OUTCOMES)
    assert [v.short() for v in verdicts[:6]] == [
        "better",
        "slightly better",
        "equivalent",
        "slightly worse",
        "worse",
        "inconclusive",
    ]
    table = verdict_table([("cut", "probe", v) for v in verdicts])
    assert table["verdict"].tolist() == [
        "cut better",
        "cut slightly better (by < 1 point)",
        "equivalent (inside ±1 point)",
        "probe slightly better (by < 1 point)",
        "probe better",
        "inconclusive (cut may be better)",
        "inconclusive (probe may be better)",
        "inconclusive (either may be better)",
    ]
    assert table["95% interval"].iloc[0] == "+1.2 to +3.0 points"
    assert list(table.columns)[-1] == "verdict" and MARGIN == 0.01


def test_compare_tells_a_slight_difference_on_many_images():
    # 20,000 paired images: A gets 100 more right (0.5 points), 20 fewer elsewhere
    rng = np.random.default_rng(9)
    b = rng.random(20_000) < 0.8
    a = b.copy()
    a[np.flatnonzero(~b)[:120]] = True
    a[np.flatnonzero(b)[:20]] = False
    v, w = compare(a, b), compare(b, a)
    assert v.difference == pytest.approx(0.005)
    assert 0 < v.low and v.high < MARGIN and v.verdict == "A slightly better"
    assert w.verdict == "B slightly better" and w.not_worse and w.b_better
    assert v.sentence().startswith("A is better than B, but by less than a point")
    assert w.sentence().startswith("B is better than A, but by less than a point")


def test_compare_uses_classify_on_its_interval():
    rng = np.random.default_rng(10)
    for k in (0, 5, 40, 200):
        a = rng.random((2, 400)) < 0.8
        b = np.stack([_drop(run, k, i) for i, run in enumerate(a)])
        v = compare(a, b)
        assert v.verdict == classify(v.low, v.high, v.margin) and v.level == 0.95
