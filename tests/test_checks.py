"""The exercise self-checks of chapters 1 and 2, and what every check promises: right
answers in every correct form pass, wrong ones fail with a hint, malformed ones get a
[wrong] line instead of an exception, and answers stay hidden until reveal=True.
Chapters 3 and 4: tests/test_checks_ch3_ch4.py."""

import ast
import copy
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import v2

import tlutils as tl
from tlutils import checks

BICUBIC = T.InterpolationMode.BICUBIC


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


@pytest.fixture(scope="module")
def densenet():
    """An architecture-only DenseNet-121, as in chapter 2's exercise (never changed)."""
    return tl.create_model("densenet121", pretrained=False)


@pytest.fixture(scope="module")
def resnet50():
    return tl.create_model("resnet50", pretrained=False)


@pytest.fixture(scope="module")
def vit():
    """torchvision's ViT-B/16, which takes 224 px images only."""
    return tl.create_model("vit_b_16", pretrained=False)


# ------------------------------------------------------------------ every check


def test_verdicts_are_wrapped_for_the_book_column():
    result = checks.CheckResult("Long")
    result.check(False, "right", "word " * 40)
    result.check(True, "a short one", "wrong")
    lines = str(result).splitlines()
    assert lines[0] == "Long: not yet"
    assert lines[1] == "  [ok]    a short one"
    assert lines[2].startswith("  [wrong] word") and all(
        line.startswith(" " * 10 + "word") for line in lines[3:]
    )
    assert len(lines) > 3 and max(map(len, lines)) <= 76
    assert said(result).count("word") == 40


def test_status_says_what_could_be_judged():
    result = checks.CheckResult("T")
    assert result.status == "cannot judge" and not result  # nothing judged
    result.unjudged.append("a pair the data cannot tell")
    assert result.status == "cannot judge" and not result
    assert "[?] a pair the data cannot tell" in said(result)
    result.passed.append("one pair right")
    assert result.status == "right where it can judge" and result.ok
    result.unjudged.clear()
    assert result.status == "all right" and result.ok
    result.failed.append("one pair wrong")
    assert result.status == "not yet" and not result


def test_answers_are_shown_only_on_request():
    result = checks.CheckResult("T", failed=["not case 1"], answers=["case 4"])
    assert "case 4" not in said(result) and checks.REVEAL_HINT in said(result)
    result.revealed = True
    assert "[answer] case 4" in said(result) and checks.REVEAL_HINT not in said(result)
    result.failed.clear()
    result.passed.append("right")
    assert "case 4" not in said(result) and checks.REVEAL_HINT not in said(result)


CALLS = {
    "check_preprocessing": 2,
    "check_new_head": 2,
    "check_frozen_body": 1,
    "check_case": 1,
    "check_discriminative_lrs": 2,
    "check_frozen_batchnorm": 1,
    "check_strategy": 2,
    "check_fine_tune_setup": 3,
    "check_ranking": 2,
}
JUNK = [None, 5, "x", [], [{"params": []}], object(), nn.Linear(2, 2), nn.ReLU()]


@pytest.mark.parametrize("name", sorted(CALLS))
def test_no_check_raises_on_malformed_answers(name):
    assert {n for n in checks.__all__ if n.startswith("check_")} == set(CALLS)
    check = getattr(checks, name)
    for junk in JUNK:
        result = check(*[junk] * CALLS[name])
        assert isinstance(result, checks.CheckResult) and not result.ok, name
        assert result.failed or result.unjudged, (name, junk)


def test_an_unexpected_error_becomes_a_wrong_line():
    class Broken(nn.Linear):
        def named_modules(self, *args, **kwargs):
            raise RuntimeError("boom")

    result = checks.check_frozen_body(Broken(2, 2))
    wrong(result, "could not judge", "a Broken", "RuntimeError: boom")
    assert "check_frozen_body(model)" in said(result)


def test_checks_import_only_the_core_modules():
    tree = ast.parse(Path(checks.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1
    }
    core = {"models", "stages", "train", "data", "verdict", "rule", "features"}
    assert imported and imported <= core, imported


# ------------------------------------------------------------------ chapter 1


def by_hand(normalize, resize=256, crop=224, mode=BICUBIC, to_tensor=True):
    steps = [T.Resize(resize, interpolation=mode), T.CenterCrop(crop)]
    steps += [T.ToTensor()] if to_tensor else []
    return T.Compose(steps + ([normalize] if normalize else []))


def test_preprocessing_accepts_every_correct_form(pretrained, resnet50):
    config = tl.data_config(pretrained)
    right(checks.check_preprocessing(tl.create_transform(config), pretrained))
    # The solution, and the scalar form Normalize(0.5, 0.5) (it crashed the old check).
    for norm in [T.Normalize((0.5,) * 3, (0.5,) * 3), T.Normalize(0.5, 0.5)]:
        right(checks.check_preprocessing(by_hand(norm), pretrained))
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    crop = [v2.Resize(256, interpolation=BICUBIC), v2.CenterCrop(224)]
    norm = v2.Normalize([0.5] * 3, [0.5] * 3)
    for steps in [crop + to_float, to_float + crop]:  # PIL first, or tensor first
        right(checks.check_preprocessing(v2.Compose([*steps, norm]), pretrained))
    timm_tf = timm.data.create_transform(
        **timm.data.resolve_data_config({}, model=pretrained)
    )
    right(checks.check_preprocessing(timm_tf, pretrained))
    right(
        checks.check_preprocessing(
            tl.create_transform(tl.data_config(resnet50)), resnet50
        )
    )
    preset = torchvision.models.ResNet50_Weights.DEFAULT.transforms()
    right(checks.check_preprocessing(preset, resnet50))


def test_preprocessing_fails_wrong_pipelines(pretrained):
    norm = T.Normalize(0.5, 0.5)
    cases = {
        "there is no Normalize step": by_hand(None),  # the starter
        "not the statistics this model was pretrained with": by_hand(
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        ),
        "there is no Resize": T.Compose([T.ToTensor(), norm]),
        "Resize(32)": by_hand(norm, resize=32, crop=32),
        "RandomResizedCrop, RandomHorizontalFlip are random": tl.create_transform(
            tl.data_config(pretrained), train=True
        ),
        "Normalize comes before": T.Compose(
            [*by_hand(None, to_tensor=False).transforms, norm, T.ToTensor()]
        ),
        "it normalises 2 times": T.Compose([*by_hand(norm).transforms, norm]),
        "stretches every photo": by_hand(norm, resize=(256, 256)),
        "there is no CenterCrop": T.Compose(
            [T.Resize(256, interpolation=BICUBIC), T.ToTensor(), norm]
        ),
        "Resize uses bilinear interpolation": by_hand(
            norm, mode=T.InterpolationMode.BILINEAR
        ),
        "ColorJitter is random": T.Compose(
            [T.ColorJitter(0.4), *by_hand(norm).transforms]
        ),
    }
    for phrase, transform in cases.items():
        wrong(checks.check_preprocessing(transform, pretrained), phrase)
    no_resize = checks.check_preprocessing(T.Compose([T.ToTensor(), norm]), pretrained)
    wrong(
        no_resize, "shape (3, 240, 320), but the model was pretrained on (3, 224, 224)"
    )
    small = checks.check_preprocessing(by_hand(norm, resize=32, crop=32), pretrained)
    wrong(small, "shape (3, 32, 32)")


def test_preprocessing_hides_the_answer_until_reveal(pretrained, resnet50):
    lite0_tf = tl.create_transform(tl.data_config(pretrained))  # exercise 2's starter
    hint = checks.check_preprocessing(lite0_tf, resnet50)
    wrong(
        hint, "Normalize uses mean (0.5, 0.5, 0.5)", "Resize(256)", checks.REVEAL_HINT
    )
    assert "0.485" not in said(hint) and "232" not in said(hint)
    answer = checks.check_preprocessing(lite0_tf, resnet50, reveal=True)
    wrong(answer, "[answer] Resize(232, bilinear interpolation), then CenterCrop(224)")
    assert "std=(0.229, 0.224, 0.225)" in said(answer)


def test_preprocessing_reports_malformed_answers(pretrained):
    good = tl.create_transform(tl.data_config(pretrained))
    wrong(checks.check_preprocessing(None, pretrained), "expected a transform", "None")
    wrong(checks.check_preprocessing(pretrained, good), "the arguments look swapped")
    plain = torchvision.models.resnet18()  # no pretrained_cfg
    wrong(
        checks.check_preprocessing(good, plain),
        "has no pretrained_cfg",
        "tl.create_model",
    )
    crash = T.Compose([T.Lambda(lambda img: img.nonexistent), T.ToTensor()])
    wrong(checks.check_preprocessing(crash, pretrained), "raises AttributeError")
    pil_only = T.Compose([T.Resize(256, interpolation=BICUBIC), T.CenterCrop(224)])
    wrong(
        checks.check_preprocessing(pil_only, pretrained),
        "it returns an Image, not a tensor",
    )
    uint8 = v2.Compose(
        [v2.Resize(256, interpolation=BICUBIC), v2.CenterCrop(224), v2.ToImage()]
    )
    wrong(checks.check_preprocessing(uint8, pretrained), "torch.uint8 pixels")


# ------------------------------------------------------------------ chapter 2


def mlp(inputs: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inputs, 256), nn.ReLU(), nn.Dropout(0.3), nn.Linear(256, classes)
    )


def frozen_but_head(model: nn.Module) -> nn.Module:
    tl.freeze(model)
    return tl.unfreeze(model, "classifier")


def test_new_head_accepts_replaced_and_mlp_heads(densenet):
    right(checks.check_new_head(tl.replace_head(copy.deepcopy(densenet), 5), 5))
    by_hand = copy.deepcopy(densenet)
    by_hand.classifier = nn.Linear(1024, 5)
    right(checks.check_new_head(by_hand, num_classes=5))
    two_layers = copy.deepcopy(densenet)
    two_layers.classifier = mlp(1024, 5)
    result = checks.check_new_head(two_layers, 5)
    right(result)
    assert "a forward pass at 224 px" in said(result)


def test_new_head_runs_at_the_models_own_input_size(vit):
    vit = tl.replace_head(copy.deepcopy(vit), 3)
    result = checks.check_new_head(vit, 3)  # a 64 px pass crashed the old check
    right(result)
    assert "at 224 px" in said(result) and "heads.head" in said(result)
    wrong(
        checks.check_new_head(vit, 5),
        "the head gives 3 outputs, but the dataset has 5 classes",
    )


def test_new_head_fails_wrong_heads(densenet):
    wrong(
        checks.check_new_head(copy.deepcopy(densenet), 5),
        "1000 outputs",
        "still the ImageNet head",
    )
    wrong(
        checks.check_new_head(tl.replace_head(copy.deepcopy(densenet), 4), 5),
        "4 outputs",
    )
    frozen = tl.freeze(tl.replace_head(copy.deepcopy(densenet), 5))
    wrong(checks.check_new_head(frozen, 5), "the head is frozen")


def test_new_head_explains_the_commonest_slip_and_hides_the_size(densenet):
    slip = copy.deepcopy(densenet)
    slip.classifier = nn.Linear(1280, 5)  # Lite0's width: a crash in the old check
    hint = checks.check_new_head(slip, 5)
    wrong(hint, "first layer takes 1280 features", "the body gives it another number")
    assert "1024" not in said(hint)
    answer = checks.check_new_head(slip, 5, reveal=True)
    wrong(answer, "[answer] the body gives 1024 features: a new nn.Linear(1024, 5)")


def test_new_head_reports_malformed_answers(densenet):
    wrong(checks.check_new_head(None, 5), "expected a model", "you passed None")
    wrong(checks.check_new_head(5, densenet), "the arguments look swapped")
    for count in ["5", True, 0, 2.5]:
        wrong(
            checks.check_new_head(densenet, count),
            "num_classes should be a whole number",
        )
    headless = nn.Sequential(nn.Conv2d(3, 4, 3))
    wrong(checks.check_new_head(headless, 5), "cannot find the head")


def test_frozen_body_right_and_wrong(densenet):
    model = tl.replace_head(copy.deepcopy(densenet), 5)
    wrong(checks.check_frozen_body(model), "body parameter tensors are still trainable")
    tl.freeze(model)
    wrong(checks.check_frozen_body(model), "the head is frozen")
    tl.unfreeze(model, tl.get_head(model))
    right(checks.check_frozen_body(model))


def test_frozen_body_counts_an_mlp_head_as_head(densenet):
    model = copy.deepcopy(densenet)
    model.classifier = mlp(1024, 5)
    right(checks.check_frozen_body(frozen_but_head(model)))  # failed in the old check
    tl.freeze(model, "classifier.0")
    wrong(checks.check_frozen_body(model), "part of the head is frozen (0.weight")
    lite0 = copy.deepcopy(tl.create_model(pretrained=False))
    lite0.classifier = mlp(1280, 2)
    right(checks.check_frozen_body(frozen_but_head(lite0)))


def test_frozen_body_reports_malformed_answers():
    wrong(checks.check_frozen_body(None), "expected a model", "None")
    wrong(
        checks.check_frozen_body(torch.optim.SGD([nn.Parameter(torch.zeros(1))], 0.1)),
        "SGD optimizer",
    )


@pytest.fixture
def net(pretrained):
    """Chapter 2's exercise: a frozen Lite0 after model.train()."""
    return tl.freeze(copy.deepcopy(pretrained)).train()


def test_frozen_batchnorm_accepts_isinstance_and_the_helper(net):
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):  # timm's BatchNormAct2d too
            module.eval()
    right(checks.check_frozen_batchnorm(net))
    helper = tl.freeze(tl.create_model(pretrained=False)).train()
    tl.set_batchnorm_eval(helper)
    right(checks.check_frozen_batchnorm(helper))


def test_frozen_batchnorm_fails_wrong_answers(net, pretrained):
    wrong(
        checks.check_frozen_batchnorm(net),
        "49 frozen BatchNorm layers are in train mode",
    )
    by_type = copy.deepcopy(net)
    for module in by_type.modules():
        if type(module) is nn.BatchNorm2d:  # misses timm's BatchNormAct2d
            module.eval()
    wrong(
        checks.check_frozen_batchnorm(by_type), "BatchNormAct2d", "test with isinstance"
    )
    everything = copy.deepcopy(net).eval()  # dropout off too
    wrong(
        checks.check_frozen_batchnorm(everything), "the whole network is in eval mode"
    )
    head_too = copy.deepcopy(net)
    tl.set_batchnorm_eval(head_too)
    head_too.classifier.eval()
    wrong(
        checks.check_frozen_batchnorm(head_too),
        "1 layers other than BatchNorm",
        "classifier",
    )
    unfrozen = copy.deepcopy(pretrained).train()
    wrong(checks.check_frozen_batchnorm(unfrozen), "no BatchNorm layer is frozen")


def test_frozen_batchnorm_without_batchnorm_cannot_judge(vit):
    result = checks.check_frozen_batchnorm(vit)
    assert not result.ok and result.status == "cannot judge"
    assert "has no BatchNorm layer" in said(result)
    wrong(checks.check_frozen_batchnorm(None), "expected a model")
