"""Tests of tlutils.reference (chapters 2-4): resumable runs, the results file, lr trials."""

import json

import numpy as np
import pytest

from tlutils import reference
from tlutils.verdict import compare


def fake_arm(calls: list, accuracy: float, n: int = 20):
    """A run that is only a record of being called: ``accuracy`` of ``n`` images right."""

    def work() -> dict:
        calls.append(accuracy)
        right = np.arange(n) < round(accuracy * n)
        return {"correct": right, "correct_ood": right[::-1], "note": "fake"}

    return work


def run_config(runner: reference.Runner, calls: list) -> list:
    """A tiny config: two arms, three seeds each."""
    rows = []
    for arm, acc in [("probe", 0.5), ("tuned", 0.8)]:
        for seed in (0, 1, 2):
            settings = {"size": 8, "lr": 1e-3}
            work = fake_arm(calls, acc + 0.05 * seed)
            rows.append(runner.run(arm, settings, seed, work, chapter=3))
    return rows


def test_runs_in_the_file_are_skipped_and_rows_keep_provenance(tmp_path):
    path = tmp_path / "results" / "ref.jsonl"
    calls: list = []
    first = reference.Runner(path, {"commit": "abc", "machine": reference.machine()})
    run_config(first, calls)
    assert len(calls) == 6 and first.ran == 6
    again: list = []
    second = reference.Runner(path)
    rows = run_config(second, again)
    assert again == [] and second.ran == 0  # resumed: nothing runs twice
    row = rows[-1]
    assert row["chapter"] == 3 and row["commit"] == "abc" and row["note"] == "fake"
    assert row["machine"]["cores"] >= 1 and row["machine"]["torch"]
    assert row["accuracy"] == pytest.approx(0.9) and row["images"] == 20
    assert row["accuracy_ood"] == pytest.approx(0.9) and row["seconds"] >= 0
    stored = json.loads(path.read_text().splitlines()[-1])
    assert set(stored["correct"]) <= {"0", "1"} and len(stored["correct"]) == 20
    # a new setting or seed is a new run
    third = reference.Runner(path)
    third.run("tuned", {"size": 8, "lr": 3e-3}, 0, fake_arm(again, 0.7))
    third.run("tuned", {"size": 8, "lr": 1e-3}, 3, fake_arm(again, 0.7))
    assert len(again) == 2


def test_rows_feed_the_verdict_rule(tmp_path):
    path = tmp_path / "ref.jsonl"
    run_config(reference.Runner(path), [])
    rows = reference.load_reference(path)
    tuned = reference.runs_of(rows, "tuned", chapter=3, size=8)
    probe = reference.runs_of(rows, "probe")
    assert tuned.shape == probe.shape == (3, 20)
    assert tuned.mean(1) == pytest.approx([0.8, 0.85, 0.9])  # sorted by seed
    assert compare(tuned, probe).difference == pytest.approx(0.3)
    with pytest.raises(ValueError, match="No final runs"):
        reference.runs_of(rows, "tuned", size=9)
    table = reference.summary(rows).set_index("arm")
    assert table.loc["tuned", "runs"] == 3 and table.loc["tuned", "lr"] == "0.001"
    assert table.loc["tuned", "accuracy"] == pytest.approx(0.85)
    low, high = map(float, table.loc["tuned", "95% interval"].split(" to "))
    assert low < 0.85 < high


def test_compare_arms_pairs_seeds_and_waits_for_both_arms(tmp_path):
    path = tmp_path / "ref.jsonl"
    run_config(reference.Runner(path), [])
    rows = reference.load_reference(path)
    v = reference.compare_arms(rows, "tuned", "probe")
    assert v.runs == 3 and v.difference == pytest.approx(0.3)
    assert (
        v.verdict
        == compare(
            reference.runs_of(rows, "tuned"), reference.runs_of(rows, "probe")
        ).verdict
    )
    ood = reference.compare_arms(rows, "tuned", "probe", "correct_ood")
    assert ood.difference == pytest.approx(0.3)
    assert reference.compare_arms(rows, "tuned", "not run yet") is None
    assert reference.compare_arms(rows, "tuned", "probe", "no such field") is None


def test_finished_arms_waits_for_every_seed_of_a_trained_arm(tmp_path):
    path = tmp_path / "ref.jsonl"
    runner = reference.Runner(path)
    runner.run("probe", {"size": 8}, 0, fake_arm([], 0.5), chapter=3)
    for seed in (0, 1):
        runner.run("tuned", {"lr": 1e-3}, seed, fake_arm([], 0.8), chapter=3)
    rows = reference.load_reference(path)
    assert reference.finished_arms(rows) == {"probe"}  # two of three seeds: not yet
    runner.run("tuned", {"lr": 1e-3}, 2, fake_arm([], 0.8), chapter=3)
    rows = reference.load_reference(path)
    assert reference.finished_arms(rows) == {"probe", "tuned"}
    assert reference.finished_arms(rows, runs=4) == {"probe"}


def test_a_damaged_line_is_skipped_and_the_next_row_starts_afresh(tmp_path):
    path = tmp_path / "ref.jsonl"
    calls: list = []
    run_config(reference.Runner(path), calls)
    with open(path, "a") as f:
        f.write('{"key": "half a line')  # a writer killed mid-line
    with pytest.warns(UserWarning, match="damaged"):
        runner = reference.Runner(path)
    runner.run("new", {}, 0, fake_arm(calls, 0.5))
    with pytest.warns(UserWarning, match="damaged"):
        rows = reference.load_reference(path)
    assert [r["arm"] for r in rows][-1] == "new" and len(rows) == 7


def test_dry_runner_lists_what_is_left(tmp_path):
    path = tmp_path / "ref.jsonl"
    calls: list = []
    dry = reference.Runner(path, dry=True)
    assert run_config(dry, calls) == [None] * 6
    assert calls == [] and len(dry.missing) == 6 and not path.exists()


def test_choose_lr_widens_until_the_best_rate_is_inside(tmp_path):
    runner = reference.Runner(tmp_path / "ref.jsonl")
    calls: list = []

    def trial(lr: float) -> dict:  # best at 3e-3, above the grid
        calls.append(lr)
        score = 1 - abs(np.log10(lr) - np.log10(3e-3)) / 5
        return {"correct": np.arange(100) < round(100 * score)}

    lr, scores, edge = reference.choose_lr(
        runner, "arm", {"size": 8}, [1e-4, 3e-4, 1e-3], trial
    )
    assert lr == pytest.approx(3e-3) and not edge
    assert sorted(scores) == pytest.approx([1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    # the trials are runs of the file: choosing again trains nothing
    again = reference.choose_lr(runner, "arm", {"size": 8}, [1e-4, 3e-4, 1e-3], trial)
    assert again == (lr, scores, edge) and len(calls) == 5
    trials = [r for r in runner.done.values() if r["kind"] == "trial"]
    assert len(trials) == 5


def test_choose_lr_ties_go_to_the_larger_rate_and_widening_stops(tmp_path):
    runner = reference.Runner(tmp_path / "ref.jsonl")
    flat = lambda lr: {"correct": np.ones(10, bool)}  # noqa: E731
    lr, scores, edge = reference.choose_lr(
        runner, "flat", {}, [1e-3, 3e-3], flat, max_widen=2
    )
    assert lr == pytest.approx(3e-2) and edge and len(scores) == 4
    with pytest.raises(ValueError, match="ladder"):
        reference.choose_lr(runner, "x", {}, [2e-3], flat)
    dry = reference.Runner(tmp_path / "other.jsonl", dry=True)
    assert reference.choose_lr(dry, "x", {}, [1e-3, 3e-3], flat)[0] is None


def test_bits_round_trip_and_provenance_helpers(tmp_path):
    correct = np.array([True, False, True, True])
    assert reference.to_bits(correct) == "1011"
    assert reference.from_bits("1011").tolist() == correct.tolist()
    with pytest.raises(ValueError, match="0 and 1"):
        reference.from_bits("10x1")
    assert reference.git_commit(tmp_path) == "unknown"  # not a repository
    here = reference.git_commit(".")
    assert here == "unknown" or len(here) == 40
    a = reference.run_key("arm", {"b": 1, "a": 2}, 0)
    assert a == reference.run_key("arm", {"a": 2, "b": 1}, 0)  # order-free
    assert a != reference.run_key("arm", {"a": 2, "b": 1}, 0, kind="trial")
