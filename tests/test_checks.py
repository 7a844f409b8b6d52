import copy

import pytest
import torch

import tlutils as tl
from tlutils import checks


def said(result: checks.CheckResult) -> str:
    """What a check printed, with its line wrapping undone."""
    return " ".join(str(result).split())


@pytest.fixture(scope="module")
def lite0():
    return tl.create_model().eval()


def test_preprocessing_right_and_wrong(lite0):
    right = tl.create_transform(tl.data_config(lite0))
    assert checks.check_preprocessing(right, lite0).ok
    wrong_cfg = {
        **tl.data_config(lite0),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    }
    result = checks.check_preprocessing(tl.create_transform(wrong_cfg), lite0)
    assert not result and "pretrained with mean (0.5, 0.5, 0.5)" in said(result)
    from torchvision import transforms

    no_norm = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]
    )
    assert "no transforms.Normalize" in said(checks.check_preprocessing(no_norm, lite0))


def test_new_head_right_and_wrong(lite0):
    wrong = copy.deepcopy(lite0)
    result = checks.check_new_head(wrong, 5)
    assert (
        not result.ok
        and "the head has 1000 outputs, your dataset has 5 classes" in said(result)
    )
    right = tl.replace_head(copy.deepcopy(lite0), 5)
    assert checks.check_new_head(right, 5).ok


def test_frozen_body_right_and_wrong(lite0):
    model = tl.replace_head(copy.deepcopy(lite0), 2)
    assert not checks.check_frozen_body(model).ok  # nothing frozen yet
    tl.freeze(model)
    frozen_head = checks.check_frozen_body(model)
    assert not frozen_head.ok and "the head is frozen too" in said(frozen_head)
    tl.unfreeze(model, tl.get_head(model))
    assert checks.check_frozen_body(model).ok


def test_case_right_and_wrong():
    assert checks.check_case(1, images_per_class=10, similar=True).ok
    result = checks.check_case(1, images_per_class=10, similar=False)
    assert not result.ok and "case 2" in said(result)


def test_discriminative_lrs_right_and_wrong():
    model = tl.create_model("resnet18", pretrained=False, num_classes=3)
    flat = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert "same learning rate" in said(checks.check_discriminative_lrs(flat, model))
    body = [p for n, p in model.named_parameters() if not n.startswith("fc")]
    increasing = torch.optim.Adam(
        [{"params": body, "lr": 1e-4}, {"params": model.fc.parameters(), "lr": 1e-3}]
    )
    assert checks.check_discriminative_lrs(increasing, model).ok
    reversed_lrs = torch.optim.Adam(
        [{"params": body, "lr": 1e-3}, {"params": model.fc.parameters(), "lr": 1e-4}]
    )
    result = checks.check_discriminative_lrs(reversed_lrs, model)
    assert (
        not result.ok
        and "decreases" in said(result)
        and "not the largest" in said(result)
    )
    partial = torch.optim.Adam([{"params": model.fc.parameters(), "lr": 1e-3}])
    assert "in no parameter group" in said(
        checks.check_discriminative_lrs(partial, model)
    )


def test_frozen_batchnorm_right_and_wrong(lite0):
    model = tl.freeze(copy.deepcopy(lite0))
    model.train()
    result = checks.check_frozen_batchnorm(model)
    assert not result.ok and "in train mode" in said(result)
    tl.set_batchnorm_eval(model)
    assert checks.check_frozen_batchnorm(model).ok
    assert "no BatchNorm layer is frozen" in said(
        checks.check_frozen_batchnorm(tl.create_model(pretrained=False))
    )


def test_strategy_right_and_wrong(lite0):
    probe = tl.replace_head(tl.freeze(copy.deepcopy(lite0)), 3)
    assert checks.check_strategy(probe, "linear_probe").ok
    assert "trains the whole network" in said(checks.check_strategy(probe, "fine_tune"))
    finetune = tl.create_model(num_classes=3)
    assert checks.check_strategy(finetune, "fine_tune").ok
    wrong = checks.check_strategy(finetune, "scratch")
    assert not wrong.ok and "pretrained=False" in said(wrong)
    assert checks.check_strategy(
        tl.create_model(pretrained=False, num_classes=3), "scratch"
    ).ok
    with pytest.raises(ValueError, match="strategy must be"):
        checks.check_strategy(finetune, "cut")


def test_fine_tune_setup_right_and_wrong(lite0):
    model = tl.replace_head(tl.freeze(copy.deepcopy(lite0)), 3)
    opt = torch.optim.Adam(model.classifier.parameters(), lr=1e-3)
    assert "still frozen" in said(
        checks.check_fine_tune_setup(model, opt, warm_up_lr=1e-3)
    )
    tl.unfreeze(model, ["blocks.6", "conv_head", "bn2"])
    stale = checks.check_fine_tune_setup(model, opt, warm_up_lr=1e-3)
    assert not stale.ok and "not in the optimizer" in said(stale)
    too_fast = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3
    )
    assert "at least 10 times below" in said(
        checks.check_fine_tune_setup(model, too_fast, warm_up_lr=1e-3)
    )
    right = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=1e-4
    )
    assert checks.check_fine_tune_setup(model, right, warm_up_lr=1e-3).ok


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
