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
