"""The reference results cannot go stale (chapters 2-4): every committed run was made by
the code that is here now, and CI makes one of them again and gets the same verdict."""

import numpy as np
import pytest
import torch
from helpers import ROOT, load_script

from tlutils import recipe, reference
from tlutils.verdict import compare

reference_run = load_script("scripts/reference_run.py")
RESULTS = ROOT / "results" / "reference.jsonl"


def stale_arms(rows, code: str) -> list[str]:
    """The arms with a run made by other code than ``code``."""
    return sorted({r["arm"] for r in rows if r["settings"].get("code") != code})


def test_every_committed_run_was_made_by_the_code_here():
    rows = reference.load_reference(RESULTS)
    assert rows, f"{RESULTS} holds no runs"
    stale = stale_arms(rows, reference_run.code_digest())
    assert not stale, (
        f"The code that made these arms' runs has changed since: {', '.join(stale)}. "
        "Re-run them (python scripts/reference_run.py --commit --only "
        f"{','.join(stale)}) and move their old rows out of {RESULTS.name}."
    )


def test_a_change_of_the_recipe_makes_the_runs_stale(monkeypatch):
    rows = [
        {"arm": "ch3/x/whole_body", "settings": {"code": reference_run.code_digest()}}
    ]
    assert stale_arms(rows, reference_run.code_digest()) == []
    source = recipe._without_docstrings
    monkeypatch.setattr(  # as if one line of the training loop had changed
        recipe,
        "_without_docstrings",
        lambda text: source(text.replace("optimizer.step()", "optimizer.step()  ;0")),
    )
    assert stale_arms(rows, reference_run.code_digest()) == ["ch3/x/whole_body"]


REPRODUCED = ("ch3/flowers/cut_probe", "ch3/flowers/top3")
"""The runs CI makes again: the cheapest probe of the reference (seconds once the features
are extracted; it should agree almost exactly) and its cheapest trained arm."""


@pytest.mark.slow
@pytest.mark.parametrize("arm", REPRODUCED)
def test_ci_makes_a_reference_run_again_and_the_verdict_rule_finds_no_difference(
    arm, tmp_path
):
    """Seed 0 of ``arm`` (a trained arm at its committed rate), on this machine, against
    the committed run on the same validation images: neither better nor worse by the
    verdict rule (a trained arm moves by about a point between machine kinds)."""
    rows = reference.load_reference(RESULTS)
    committed = [
        r for r in rows if r["arm"] == arm and r["kind"] == "final" and r["seed"] == 0
    ]
    if not committed:
        pytest.skip(f"{REPRODUCED} seed 0 is not in {RESULTS.name} yet")
    row = committed[0]
    again = tmp_path / "again.jsonl"
    # the committed rate trials are copied, so that the rerun goes straight to seed 0
    # at the committed rate (a probe has none)
    for r in rows:
        if r["arm"] == arm and r["kind"] == "trial":
            reference.append_run(again, {**r, **_as_bits(r)})
    threads = torch.get_num_threads()
    reference_run.SEEDS = (0,)
    try:  # as the reference ran: one thread
        reference_run.main(["--only", arm, "--results", str(again)])
    finally:
        torch.set_num_threads(threads)
    made = [
        r for r in reference.load_reference(again)
        if r["arm"] == arm and r["kind"] == "final"
    ]  # fmt: skip
    assert len(made) == 1 and made[0]["settings"] == row["settings"]
    verdict = compare(made[0]["correct"], row["correct"])
    assert not verdict.a_better and not verdict.b_better, verdict.sentence(
        "this machine's run", "the committed run"
    )
    agree = np.mean(np.asarray(made[0]["correct"]) == np.asarray(row["correct"]))
    print(
        verdict.sentence("this machine's run", "the committed run"),
        f"{agree:.1%} agree",
    )
    if "probe" in arm:  # deterministic but for floating-point rounding
        assert agree >= 0.99, agree


def _as_bits(row):
    return {k: reference.to_bits(v) for k, v in row.items() if k.startswith("correct")}


def test_the_table_waits_for_an_arm_with_fewer_runs(tmp_path, capsys):
    """``--table`` pairs seeds: an arm still running is reported as waiting, not
    compared (and not a crash)."""
    path = tmp_path / "ref.jsonl"
    runner = reference.Runner(path, {"machine": reference.machine()})
    right = np.arange(40) < 30
    for arm, seeds in [
        ("ch4/eurosat/warm_large_lr", 3),
        ("ch4/eurosat/cold_large_lr", 2),
    ]:
        for seed in range(seeds):
            runner.run(arm, {"lr": 1e-3}, seed, lambda: {"correct": right}, chapter=4)
    reference_run.print_table(reference.load_reference(path))
    said = capsys.readouterr().out
    assert "waiting (Pair the arms run by run" in said and "3 and 2 runs" in said
    assert "better" not in said.split("verdicts")[1]
