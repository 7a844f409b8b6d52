import copy

import pytest
import torch

import tlutils as tl
from tlutils import checks


@pytest.fixture(scope="module")
def lite0():
    return tl.create_model().eval()


def test_preprocessing_right_and_wrong(lite0):
    right = tl.make_transforms(tl.data_config(lite0))
    assert checks.check_preprocessing(right, lite0).ok
    wrong_cfg = {**tl.data_config(lite0), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    result = checks.check_preprocessing(tl.make_transforms(wrong_cfg), lite0)
    assert not result and "pretrained with mean (0.5, 0.5, 0.5)" in str(result)
    from torchvision import transforms

    no_norm = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    assert "no transforms.Normalize" in str(checks.check_preprocessing(no_norm, lite0))


def test_new_head_right_and_wrong(lite0):
    wrong = copy.deepcopy(lite0)
    result = checks.check_new_head(wrong, 5)
    assert not result.ok and "the head has 1000 outputs, your dataset has 5 classes" in str(result)
    right = tl.replace_head(copy.deepcopy(lite0), 5)
    assert checks.check_new_head(right, 5).ok


def test_frozen_body_right_and_wrong(lite0):
    model = tl.replace_head(copy.deepcopy(lite0), 2)
    assert not checks.check_frozen_body(model).ok  # nothing frozen yet
    tl.freeze(model)
    frozen_head = checks.check_frozen_body(model)
    assert not frozen_head.ok and "the head is frozen too" in str(frozen_head)
    tl.unfreeze(model, tl.get_head(model))
    assert checks.check_frozen_body(model).ok


def test_case_right_and_wrong():
    assert checks.check_case(1, images_per_class=10, similar=True).ok
    result = checks.check_case(1, images_per_class=10, similar=False)
    assert not result.ok and "case 2" in str(result)


def test_discriminative_lrs_right_and_wrong():
    model = tl.create_model("resnet18", pretrained=False, num_classes=3)
    flat = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert "same learning rate" in str(checks.check_discriminative_lrs(flat, model))
    body = [p for n, p in model.named_parameters() if not n.startswith("fc")]
    increasing = torch.optim.Adam([{"params": body, "lr": 1e-4}, {"params": model.fc.parameters(), "lr": 1e-3}])
    assert checks.check_discriminative_lrs(increasing, model).ok
    reversed_lrs = torch.optim.Adam([{"params": body, "lr": 1e-3}, {"params": model.fc.parameters(), "lr": 1e-4}])
    result = checks.check_discriminative_lrs(reversed_lrs, model)
    assert not result.ok and "decreases" in str(result) and "not the largest" in str(result)
    partial = torch.optim.Adam([{"params": model.fc.parameters(), "lr": 1e-3}])
    assert "in no parameter group" in str(checks.check_discriminative_lrs(partial, model))


def test_frozen_batchnorm_right_and_wrong(lite0):
    model = tl.freeze(copy.deepcopy(lite0))
    model.train()
    result = checks.check_frozen_batchnorm(model)
    assert not result.ok and "in train mode" in str(result)
    tl.set_batchnorm_eval(model)
    assert checks.check_frozen_batchnorm(model).ok
    assert "no BatchNorm layer is frozen" in str(checks.check_frozen_batchnorm(tl.create_model(pretrained=False)))


def test_strategy_right_and_wrong(lite0):
    probe = tl.replace_head(tl.freeze(copy.deepcopy(lite0)), 3)
    assert checks.check_strategy(probe, "linear_probe").ok
    assert "trains the whole network" in str(checks.check_strategy(probe, "finetune"))
    finetune = tl.create_model(num_classes=3)
    assert checks.check_strategy(finetune, "finetune").ok
    wrong = checks.check_strategy(finetune, "scratch")
    assert not wrong.ok and "pretrained=False" in str(wrong)
    assert checks.check_strategy(tl.create_model(pretrained=False, num_classes=3), "scratch").ok
    with pytest.raises(ValueError, match="strategy must be"):
        checks.check_strategy(finetune, "cut")


def test_fine_tune_setup_right_and_wrong(lite0):
    model = tl.replace_head(tl.freeze(copy.deepcopy(lite0)), 3)
    opt = torch.optim.Adam(model.classifier.parameters(), lr=1e-3)
    assert "still frozen" in str(checks.check_fine_tune_setup(model, opt, warmup_lr=1e-3))
    tl.unfreeze(model, ["blocks.6", "conv_head", "bn2"])
    stale = checks.check_fine_tune_setup(model, opt, warmup_lr=1e-3)
    assert not stale.ok and "not in the optimizer" in str(stale)
    too_fast = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    assert "at least 10 times below" in str(checks.check_fine_tune_setup(model, too_fast, warmup_lr=1e-3))
    right = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    assert checks.check_fine_tune_setup(model, right, warmup_lr=1e-3).ok
