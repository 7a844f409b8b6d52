"""The exercise self-checks of chapters 3 and 4: right answers pass, every wrong answer
of issue 34 fails with a hint, malformed answers get a [wrong] line, and data that
cannot tell right from wrong says so. Chapters 1 and 2: tests/test_checks.py."""

import copy
import itertools

import numpy as np
import pytest
import torch
from torch import nn

import tlutils as tl
from tlutils import cases, checks
from tlutils import finetune as ft


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One-image forward passes run fastest on one thread on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def said(result: checks.CheckResult) -> str:
    """What a check printed, with its line wrapping undone."""
    return " ".join(str(result).split())


def wrong(result: checks.CheckResult, *phrases: str) -> None:
    """The check said "not yet", with every phrase in its printout."""
    text = said(result)
    assert not result.ok and result.status == "not yet", text
    assert all(p in text for p in phrases), text


def right(result: checks.CheckResult) -> None:
    assert result.ok and result.status == "all right", said(result)


# ------------------------------------------------------------------ chapter 3: the rule

TRUTH = {  # the exercise's datasets: (case, images per class, similar)
    "kitchen utensils": (1, 40, True),
    "chest X-rays": (4, 3000, False),
    "bird-song spectrograms": (2, 25, False),
    "dog breeds": (3, 800, True),
}


def test_case_accepts_the_truth_of_every_described_dataset():
    for dataset, (case, per_class, similar) in TRUTH.items():
        right(checks.check_case(case, per_class, similar, dataset=dataset))
    right(checks.check_case(4, dataset="b"))  # by letter, facts left out
    right(checks.check_case(4, 3000, False, dataset="(b) Chest X-rays"))


def test_case_judges_the_dataset_not_only_your_facts():
    # X-rays entered as similar, with the case that follows: consistent, and wrong.
    result = checks.check_case(3, 3000, True, dataset="chest X-rays")
    wrong(result, "you judged chest X-rays similar to ImageNet", "not case 3")
    wrong(
        checks.check_case(2, 25, True, dataset="bird-song spectrograms"), "similar to"
    )
    wrong(checks.check_case(3, 80, True, dataset="dog breeds"), "you entered 80 images")


def test_case_gives_a_hint_first_and_the_answer_on_request():
    hint = checks.check_case(1, 3000, False, dataset="chest X-rays")
    wrong(hint, "not case 1: 3,000 per class is large", checks.REVEAL_HINT)
    assert "case 4" not in said(hint) and "fine_tune" not in said(hint)
    answer = checks.check_case(1, 3000, False, dataset="chest X-rays", reveal=True)
    wrong(answer, "[answer] case 4 (fine_tune)")
    hint = checks.check_case(1, 25, False, dataset="bird-song spectrograms")
    wrong(hint, "not case 1: bird-song spectrograms are different")
    assert "per class is small" not in said(hint)  # only the fact that rules it out


def test_case_without_the_dataset_cannot_judge_your_facts():
    result = checks.check_case(3, 3000, True)  # the old check's "all right"
    assert result.status == "right where it can judge"
    assert "[?] whether these facts describe the dataset" in said(result)
    wrong(checks.check_case(1, 3000, False), "not case 1: 3,000 per class is large")


def test_case_reports_malformed_answers():
    for case in ["4", None, 5, True, 2.5]:
        wrong(checks.check_case(case, 40, True), "your case should be 1, 2, 3 or 4")
    wrong(checks.check_case(1, None, True), "images_per_class must be a number")
    wrong(checks.check_case(1, 40, "yes"), "similar must be True or False")
    wrong(
        checks.check_case(1, 40, "yes", dataset="a"), "similar should be True or False"
    )
    wrong(
        checks.check_case(1, dataset="cats"),
        "no dataset of the exercise is called 'cats'",
    )


# ------------------------------------------------------------- chapter 3: strategies


@pytest.fixture(scope="module")
def strategy_models():
    return {s: cases.create_strategy_model(s, 5) for s in tl.rule.STRATEGIES}


def test_strategy_accepts_every_strategy_of_chapter_3(strategy_models):
    for strategy, model in strategy_models.items():
        right(checks.check_strategy(model, strategy, num_classes=5))
    cut = checks.check_strategy(strategy_models["cut_probe"], "cut_probe", 5)
    assert "cut after stage 4" in said(cut)


def test_strategy_fine_tune_checks_the_head_and_what_trains(pretrained):
    case3 = tl.freeze(tl.create_model(num_classes=5))  # chapter 3's starter
    tl.unfreeze(case3, "classifier")
    wrong(
        checks.check_strategy(case3, "fine_tune", 5),
        "147 body parameter tensors are frozen",
    )
    tl.unfreeze(case3)
    right(checks.check_strategy(case3, "fine_tune", num_classes=5))
    imagenet = copy.deepcopy(pretrained)  # every parameter trainable, the old head
    wrong(checks.check_strategy(imagenet, "fine_tune", 5), "still the ImageNet head")
    wrong(checks.check_strategy(imagenet, "fine_tune"), "still the ImageNet head")
    wrong(checks.check_strategy(case3, "fine_tune", 3), "the dataset has 3 classes")
    frozen_head = tl.freeze(copy.deepcopy(case3), "classifier")
    wrong(checks.check_strategy(frozen_head, "fine_tune", 5), "the head is frozen")
    random = tl.create_model(pretrained=False, num_classes=5)
    wrong(
        checks.check_strategy(random, "fine_tune", 5),
        "random weights",
        "pretrained=True",
    )


def test_strategy_without_a_class_count_says_what_it_cannot_judge():
    result = checks.check_strategy(tl.create_model(num_classes=5), "fine_tune")
    assert result.status == "right where it can judge"
    assert "pass num_classes=" in said(result)


def test_strategy_fails_the_other_wrong_setups(strategy_models):
    models = strategy_models
    wrong(checks.check_strategy(models["fine_tune"], "scratch", 5), "pretrained=False")
    wrong(
        checks.check_strategy(models["fine_tune"], "linear_probe", 5),
        "trains only the head",
    )
    wrong(
        checks.check_strategy(models["linear_probe"], "cut_probe", 5),
        "the whole of Lite0",
    )
    loose_cut = tl.unfreeze(copy.deepcopy(models["cut_probe"]))
    wrong(
        checks.check_strategy(loose_cut, "cut_probe", 5),
        "a cut probe trains only the head",
    )
    wrong(
        checks.check_strategy(models["cut_probe"], "fine_tune", 5), "only up to stage 4"
    )
    random_cut = copy.deepcopy(models["cut_probe"])
    with torch.no_grad():
        random_cut.body[0].weight.normal_()
    wrong(checks.check_strategy(random_cut, "cut_probe", 5), "not the ImageNet ones")
    bad_head = copy.deepcopy(models["cut_probe"])
    bad_head.classifier = nn.Linear(1280, 5)  # stage 4 gives 80 channels
    wrong(
        checks.check_strategy(bad_head, "cut_probe", 5),
        "first layer takes 1280 features",
    )


def test_strategy_reports_malformed_answers(strategy_models):
    model = strategy_models["fine_tune"]
    wrong(checks.check_strategy(model, "cut"), "one of linear_probe, cut_probe")
    wrong(checks.check_strategy("fine_tune", model), "the arguments look swapped")
    wrong(checks.check_strategy(None, "fine_tune"), "expected a model")
    wrong(checks.check_strategy(model, "fine_tune", "5"), "num_classes should be")
    resnet = tl.create_model("resnet18", pretrained=False, num_classes=5)
    wrong(checks.check_strategy(resnet, "fine_tune", 5), "not EfficientNet-Lite0's")


# ------------------------------------------------------------------ chapter 4: rates


@pytest.fixture(scope="module")
def lrs_model():
    """Chapter 4's exercise: a fresh Lite0 with a new 5-class head (never changed)."""
    return tl.create_model(num_classes=5)


def per_stage(
    model: nn.Module, head_lr: float = 1e-3, decay: float = 0.5
) -> list[dict]:
    """By hand: the head at head_lr, each stage below at decay times the one above."""
    named = dict(model.named_parameters())
    stages = [*tl.stages.stage_modules(model), ["classifier"]]
    groups = []
    for k, modules in enumerate(reversed(stages)):
        prefixes = tuple(m + "." for m in modules)
        params = [p for n, p in named.items() if n.startswith(prefixes)]
        groups.append({"params": params, "lr": head_lr * decay**k})
    return groups


def body_and_head(model: nn.Module, body_lr: float, head_lr: float) -> torch.optim.Adam:
    head = list(tl.get_head(model).parameters())
    body = [p for p in model.parameters() if all(p is not h for h in head)]
    return torch.optim.Adam(
        [{"params": body, "lr": body_lr}, {"params": head, "lr": head_lr}]
    )


def test_discriminative_lrs_accepts_stage_by_stage_rates(lrs_model):
    right(
        checks.check_discriminative_lrs(
            torch.optim.Adam(per_stage(lrs_model)), lrs_model
        )
    )
    groups = ft.param_groups(lrs_model, lr=1e-3, decay=1 / 2.6)  # the solution
    right(checks.check_discriminative_lrs(torch.optim.Adam(groups), lrs_model))
    right(
        checks.check_discriminative_lrs(
            torch.optim.AdamW(groups), lrs_model, num_classes=5
        )
    )
    resnet = tl.create_model("resnet18", pretrained=False, num_classes=3)
    adam = torch.optim.Adam(ft.param_groups(resnet, lr=1e-2, decay=0.5))
    right(checks.check_discriminative_lrs(adam, resnet, head_lr=1e-2))


def test_discriminative_lrs_fails_the_wrong_answers_of_issue_34(lrs_model, pretrained):
    model = lrs_model
    flat = torch.optim.Adam(model.parameters(), lr=1e-3)  # the starter
    wrong(
        checks.check_discriminative_lrs(flat, model), "not more slowly than", "9 places"
    )
    one_body_group = body_and_head(model, 1e-4, 1e-3)
    wrong(
        checks.check_discriminative_lrs(one_body_group, model),
        "stage 0 (conv_stem, bn1) learns at 0.0001, not more slowly than stage 1",
    )
    fast_head = torch.optim.Adam(per_stage(model, head_lr=1e-2))
    wrong(
        checks.check_discriminative_lrs(fast_head, model),
        "the head learns at 0.01; the exercise asks for 0.001",
    )
    imagenet = torch.optim.Adam(per_stage(pretrained))
    wrong(
        checks.check_discriminative_lrs(imagenet, pretrained), "still the ImageNet head"
    )
    wrong(
        checks.check_discriminative_lrs(
            torch.optim.Adam(per_stage(model)), model, num_classes=3
        ),
        "the dataset has 3 classes",
    )
    reverse = torch.optim.Adam(per_stage(model, decay=2.0, head_lr=1e-3))
    wrong(
        checks.check_discriminative_lrs(reverse, model), "not more slowly than stage 1"
    )


def test_discriminative_lrs_fails_incomplete_optimizers(lrs_model):
    model = lrs_model
    head_only = torch.optim.Adam(model.classifier.parameters(), lr=1e-3)
    wrong(checks.check_discriminative_lrs(head_only, model), "in no parameter group")
    groups = per_stage(model)
    groups[-1]["lr"] = 0.0  # the stem
    wrong(
        checks.check_discriminative_lrs(torch.optim.Adam(groups), model),
        "a rate of 0 does not learn",
    )
    sgd = torch.optim.SGD(per_stage(model))
    wrong(checks.check_discriminative_lrs(sgd, model), "the exercise asks for Adam")
    stem_frozen = tl.freeze(copy.deepcopy(model), "conv_stem")
    adam = torch.optim.Adam(per_stage(stem_frozen))
    wrong(
        checks.check_discriminative_lrs(adam, stem_frozen),
        "1 parameter tensors are frozen",
    )
    other = torch.optim.Adam(
        per_stage(tl.create_model(pretrained=False, num_classes=5))
    )
    wrong(checks.check_discriminative_lrs(other, model), "built for another model")


def test_discriminative_lrs_reports_malformed_answers(lrs_model):
    groups = per_stage(lrs_model)
    wrong(
        checks.check_discriminative_lrs(groups, lrs_model),
        "a list of parameter groups, not an optimizer",
    )
    wrong(
        checks.check_discriminative_lrs(None, lrs_model),
        "expected an optimizer",
        "None",
    )
    adam = torch.optim.Adam(groups)
    wrong(
        checks.check_discriminative_lrs(lrs_model, adam), "the arguments look swapped"
    )
    wrong(checks.check_discriminative_lrs(adam, None), "expected a model")


# ------------------------------------------------------------------ chapter 4: phase 2

TOP = ["blocks.6", "conv_head", "bn2"]


@pytest.fixture
def warmed(pretrained):
    """After the warm-up: a frozen Lite0 with a new 5-class head."""
    return tl.replace_head(tl.freeze(copy.deepcopy(pretrained)), 5)


def phase2(model, unfreeze=TOP, body_lr=1e-4, head_lr=1e-4, head=True):
    if unfreeze:
        tl.unfreeze(model, unfreeze)
    head_params = list(model.classifier.parameters())
    body = [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and not n.startswith("classifier")
    ]
    groups = [{"params": body, "lr": body_lr}] + (
        [{"params": head_params, "lr": head_lr}] if head else []
    )
    return model, torch.optim.Adam(groups)


def test_fine_tune_setup_accepts_the_solution(warmed):
    right(checks.check_fine_tune_setup(*phase2(warmed), warm_up_lr=1e-3))


def test_fine_tune_setup_fails_the_wrong_answers_of_issue_34(warmed):
    starter = torch.optim.Adam(warmed.classifier.parameters(), lr=1e-3)
    wrong(
        checks.check_fine_tune_setup(warmed, starter, warm_up_lr=1e-3),
        "stages 7-8 are still frozen",
    )
    one_stage_down = phase2(copy.deepcopy(warmed), unfreeze=["blocks.5"])
    wrong(
        checks.check_fine_tune_setup(*one_stage_down, 1e-3),
        "stages 7-8 are still frozen",
        "stage 6 (blocks.5) is unfrozen too",
    )
    body = ["conv_stem", "bn1", "blocks", "conv_head", "bn2"]
    whole = phase2(copy.deepcopy(warmed), unfreeze=body)
    wrong(checks.check_fine_tune_setup(*whole, 1e-3), "stages 0-6 are unfrozen too")
    no_head = phase2(copy.deepcopy(warmed), head=False)
    wrong(
        checks.check_fine_tune_setup(*no_head, 1e-3),
        "the head is not in the new optimizer",
    )
    frozen_head = phase2(tl.freeze(copy.deepcopy(warmed), "classifier"))
    wrong(
        checks.check_fine_tune_setup(*frozen_head, 1e-3),
        "the head is frozen: it would stop learning",
    )
    still = phase2(copy.deepcopy(warmed), body_lr=0.0)
    wrong(checks.check_fine_tune_setup(*still, 1e-3), "a rate of 0 does not move it")
    fast = phase2(copy.deepcopy(warmed), body_lr=1e-3)
    wrong(checks.check_fine_tune_setup(*fast, 1e-3), "at least 10 times below")


def test_fine_tune_setup_fails_a_stale_optimizer(warmed):
    starter = torch.optim.Adam(warmed.classifier.parameters(), lr=1e-3)
    tl.unfreeze(warmed, TOP)  # unfrozen after the optimizer was made
    result = checks.check_fine_tune_setup(warmed, starter, warm_up_lr=1e-3)
    wrong(result, "not in the optimizer", "create the optimizer after unfreezing")


def test_fine_tune_setup_reports_malformed_answers(warmed):
    model, optimizer = phase2(warmed)
    wrong(
        checks.check_fine_tune_setup(optimizer, model, 1e-3),
        "the arguments look swapped",
    )
    wrong(checks.check_fine_tune_setup(model, None, 1e-3), "expected an optimizer")
    groups = optimizer.param_groups
    wrong(
        checks.check_fine_tune_setup(model, groups, 1e-3), "a list of parameter groups"
    )
    for rate in [None, "1e-3", 0, -1e-3]:
        wrong(
            checks.check_fine_tune_setup(model, optimizer, rate), "warm_up_lr should be"
        )


# ------------------------------------------------------------------ chapter 4: ranking


def _worse(correct: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """A paired copy with k correct images turned wrong."""
    out = correct.copy()
    picked = np.random.default_rng(seed).choice(np.flatnonzero(out), k, replace=False)
    out[picked] = False
    return out


def _flipped(runs: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A paired copy with k images of every run flipped (right to wrong or back)."""
    out = runs.copy()
    for i, run in enumerate(out):
        picked = np.random.default_rng(seed + i).choice(run.size, k, replace=False)
        run[picked] = ~run[picked]
    return out


def test_ranking_on_per_image_correctness_follows_the_verdict_rule():
    # "good" is right on 60 more of 500 images in each of 3 seeds (better); "same" has
    # the same predictions on 5,000 images per seed (equivalent).
    rng = np.random.default_rng(0)
    good = rng.random((3, 500)) < 0.9
    worse = np.stack([_worse(run, 60, i) for i, run in enumerate(good)])
    scores = {"good": good, "worse": worse}
    result = checks.check_ranking(["good", "worse"], scores)
    right(result)
    assert "good is better than worse by 12.0 points" in said(result)
    wrong(checks.check_ranking(["worse", "good"], scores), "worse above good? no")
    big = rng.random((2, 5000)) < 0.8
    same = checks.check_ranking(["a", "b"], {"a": big, "b": big.copy()})
    right(same)
    assert "either order" in said(same) and "equivalent" in said(same)


def test_ranking_says_when_the_data_cannot_judge_any_order():
    # Three methods a handful of images apart: every pair inconclusive, as at chapter
    # 4's notebook settings, where the old check said "all right" to all six orders.
    rng = np.random.default_rng(1)
    lp = rng.random((3, 250)) < 0.8
    scores = {"LP": lp, "FT": _flipped(lp, 6, 10), "LP-FT": _flipped(lp, 6, 20)}
    for order in itertools.permutations(scores):
        result = checks.check_ranking(
            list(order), scores, "accuracy on corrupted images"
        )
        assert not result.ok and result.status == "cannot judge", said(result)
        assert "this data cannot judge your order" in said(result)
        assert said(result).count("the data cannot tell") == 3


def test_ranking_of_five_agreeing_draws_is_a_finding_not_noise():
    final = [0.90, 0.86, 0.88, 0.91, 0.87]
    stage5 = [0.76, 0.78, 0.83, 0.88, 0.86]
    scores = {"final": final, "stage 5": stage5}
    result = checks.check_ranking(["final", "stage 5"], scores)
    right(result)
    assert "final is better than stage 5" in said(result)
    wrong(checks.check_ranking(["stage 5", "final"], scores))


def test_ranking_reports_malformed_answers():
    scores = {"a": np.ones((2, 10), bool), "b": np.zeros((2, 10), bool)}
    for order in ["a, b", None, ["a"], ["a", "a"], ["a", "b", "c"], [["a"], "b"]]:
        wrong(checks.check_ranking(order, scores), "exactly once")
    wrong(checks.check_ranking(["a", "b"], None), "expected the scores as a dict")
    uneven = {"a": np.ones((2, 10), bool), "b": np.ones((2, 12), bool)}
    wrong(checks.check_ranking(["a", "b"], uneven), "same validation images")
    wrong(checks.check_ranking(["a", "b"], {"a": [0.8, 0.9], "b": "xy"}), "a against b")
