"""The one learning-rate chooser (chapters 2-5): held-out score, ties to the larger rate,
the grid widened while its best rate is at an edge."""

import pytest

from tlutils.rates import LR_LADDER, LRChoice, choose_lr, on_ladder


def scorer(table, calls):
    def score(lr):
        calls.append(lr)
        return table.get(lr, 0.0)

    return score


def test_the_best_held_out_rate_inside_the_grid_is_chosen():
    calls = []
    table = {1e-4: 0.80, 3e-4: 0.90, 1e-3: 0.85}
    chosen = choose_lr(scorer(table, calls), [1e-4, 3e-4, 1e-3])
    assert chosen == LRChoice(3e-4, table, False)
    assert sorted(calls) == [1e-4, 3e-4, 1e-3]  # each rate once


def test_ties_go_to_the_larger_rate():
    chosen = choose_lr(
        scorer({1e-4: 0.9, 3e-4: 0.9, 1e-3: 0.5}, []), [1e-4, 3e-4, 1e-3]
    )
    assert chosen.lr == 3e-4


def test_the_grid_widens_at_its_edge_until_the_best_is_inside():
    calls = []
    table = {1e-4: 0.5, 3e-4: 0.6, 1e-3: 0.7, 3e-3: 0.8, 1e-2: 0.75}
    chosen = choose_lr(scorer(table, calls), [1e-4, 3e-4, 1e-3])
    assert chosen.lr == 3e-3 and not chosen.at_edge
    assert calls == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    # at most max_widen extra rates: then the choice says it is still at an edge
    rising = {lr: i for i, lr in enumerate(LR_LADDER)}
    chosen = choose_lr(scorer(rising, []), [1e-4, 3e-4], max_widen=1)
    assert chosen.lr == 1e-3 and chosen.at_edge and len(chosen.scores) == 3


def test_a_score_that_cannot_run_yet_gives_no_choice():
    assert choose_lr(lambda lr: None, [1e-4, 3e-4]) is None


def test_rates_off_the_ladder_are_refused_with_the_ladder_named():
    assert on_ladder(0.0003) == 3e-4
    with pytest.raises(ValueError, match="not on the ladder"):
        choose_lr(lambda lr: 1.0, [2e-4])
    with pytest.raises(ValueError, match="at least one"):
        choose_lr(lambda lr: 1.0, [])


def test_describe_names_every_trial():
    text = LRChoice(3e-4, {1e-4: 0.8, 3e-4: 0.9}, False).describe()
    assert text == "lr 0.0003; held-out accuracy 0.0001: 0.800, 0.0003: 0.900"
