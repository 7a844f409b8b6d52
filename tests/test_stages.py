"""Tests for tlutils.stages (chapters 2-4): one numbering of EfficientNet-Lite0's stages."""

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import tlutils as tl
from tlutils import stages

CHANNELS = [32, 16, 24, 40, 80, 112, 192, 320, 1280]


@pytest.fixture(scope="module")
def lite0_random():
    """The architecture with random weights, in eval mode (no download, no weights file)."""
    torch.manual_seed(0)
    return tl.create_model(pretrained=False).eval()


def test_numbering_is_timms_own(lite0_random):
    assert len(stages.STAGE_NAMES) == stages.NUM_STAGES == 9
    modules = stages.stage_modules(lite0_random)
    assert modules[0] == ["conv_stem", "bn1"] and modules[8] == ["conv_head", "bn2"]
    assert modules[1:8] == [[f"blocks.{i}"] for i in range(7)]
    for info in lite0_random.feature_info:  # timm calls blocks.k "stage k + 1" too
        assert modules[info["stage"]] == [info["module"]]
    assert stages.head_modules(lite0_random) == ["classifier"]


def test_stage_channels_agree_with_timm(lite0_random):
    assert stages.stage_channels(lite0_random) == CHANNELS
    for info in lite0_random.feature_info:
        assert CHANNELS[info["stage"]] == info["num_chs"]


def test_stage_table_at_224_px(lite0_random):
    table = stages.stage_table(lite0_random)
    assert list(table.index) == list(range(9))
    assert table["channels"].tolist() == CHANNELS
    sizes = [
        "112x112",
        "112x112",
        "56x56",
        "28x28",
        "14x14",
        "14x14",
        "7x7",
        "7x7",
        "7x7",
    ]
    assert table["map size"].tolist() == sizes
    assert table.loc[7, "timm modules"] == "blocks.6"


def test_stage_outputs_match_forward_hooks(lite0_random):
    x = torch.randn(2, 3, 64, 64)
    captured = {}
    hooks = [
        lite0_random.blocks[k - 1].register_forward_hook(
            lambda m, i, o, k=k: captured.setdefault(k, o)
        )
        for k in (2, 7)
    ]
    with torch.no_grad():
        lite0_random(x)
    for hook in hooks:
        hook.remove()
    two, seven, eight, zero = stages.stage_outputs(lite0_random, x, [2, 7, 8, 0])
    assert torch.allclose(two, captured[2], atol=1e-5)
    assert torch.allclose(seven, captured[7], atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(eight, lite0_random.forward_features(x), atol=1e-5)
        stem = lite0_random.bn1(lite0_random.conv_stem(x))
    assert torch.allclose(zero, stem, atol=1e-5)


def test_stage_outputs_share_weights_and_take_module_names(lite0_random):
    before = lite0_random.conv_stem.weight.clone()
    stages.stage_outputs(lite0_random, torch.randn(1, 3, 32, 32), [0])
    assert torch.equal(before, lite0_random.conv_stem.weight)
    net = torchvision.models.resnet18(weights=None)
    a, b = stages.stage_outputs(net, torch.randn(1, 3, 64, 64), ["layer1", "layer4"])
    assert a.shape == (1, 64, 16, 16) and b.shape == (1, 512, 2, 2)


def test_stage_outputs_errors(lite0_random):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="from 0 to 8"):
        stages.stage_outputs(lite0_random, x, [9])
    with pytest.raises(ValueError, match="from 0 to 8"):
        stages.stage_outputs(lite0_random, x, [-1])
    with pytest.raises(ValueError, match="batch"):
        stages.stage_outputs(lite0_random, x[0], [0])
    with pytest.raises(ValueError, match="no modules named"):
        stages.stage_outputs(torchvision.models.resnet18(weights=None), x, ["layer9"])
    with pytest.raises(TypeError, match="EfficientNet-Lite0"):
        stages.stage_outputs(torchvision.models.resnet18(weights=None), x, [0])
    with pytest.raises(TypeError):
        stages.stage_outputs(lite0_random, x, [0, "blocks.1"])
    with pytest.raises(ValueError):
        stages.stage_outputs(lite0_random, x, [])


def test_stage_features_are_pooled_stage_outputs(lite0_random):
    x = torch.randn(2, 3, 64, 64)
    out = stages.StageFeatures(lite0_random)(x)
    assert out.shape == (2, sum(CHANNELS))
    with torch.no_grad():
        pooled = lite0_random.forward_head(
            lite0_random.forward_features(x), pre_logits=True
        )
        stage4 = lite0_random.blocks[:4](lite0_random.bn1(lite0_random.conv_stem(x)))
    assert torch.allclose(out[:, -1280:], pooled, atol=1e-5)
    start = sum(CHANNELS[:4])
    assert torch.allclose(out[:, start : start + 80], stage4.mean((2, 3)), atol=1e-5)
    subset = stages.StageFeatures(lite0_random, [5, 2])(x)
    assert subset.shape == (2, 24 + 112)
    assert all(p.requires_grad for p in lite0_random.parameters())  # a copy was frozen


def test_stage_features_errors(lite0_random):
    with pytest.raises(ValueError, match="from 0 to 8"):
        stages.StageFeatures(lite0_random, [9])
    with pytest.raises(ValueError):
        stages.StageFeatures(lite0_random, [])
    with pytest.raises(ValueError):
        stages.StageFeatures(lite0_random, [2, 2])
    with pytest.raises(TypeError, match="EfficientNet-Lite0"):
        stages.StageFeatures(nn.Linear(3, 3))


def test_stage_features_are_cached_per_choice_of_stages(
    lite0_random, tmp_path, monkeypatch
):
    monkeypatch.setenv("TLUTILS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "images"
    for c, color in enumerate(["red", "blue"]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), color).save(root / f"class{c}" / f"{i}.png")
    dataset = tl.ImageFolder(root, transform=tl.create_transform(image_size=32))
    feats, labels = tl.stage_features(
        lite0_random, dataset, stages=[1, 8], progress=False
    )
    assert sorted(feats) == [1, 8] and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert feats[1].shape == (6, 16) and feats[8].shape == (6, 1280)
    cache = tmp_path / "cache" / "features"
    assert len(list(cache.glob("*.pt"))) == 1
    again, _ = tl.stage_features(lite0_random, dataset, stages=[1, 8], progress=False)
    assert torch.equal(again[8], feats[8])
    tl.stage_features(lite0_random, dataset, stages=[1, 7], progress=False)
    assert len(list(cache.glob("*.pt"))) == 2


def test_body_to_stage_shares_modules(lite0_random):
    body = stages.body_to_stage(lite0_random, 3)
    assert len(body) == 2 + 3 and body[0] is lite0_random.conv_stem
    assert len(stages.body_to_stage(lite0_random, 8)) == 2 + 7 + 2


def test_split_at_stage_is_exact(lite0_random):
    model = tl.create_model(pretrained=False, num_classes=3).eval()
    bottom, top = stages.split_at_stage(model, 5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            top.eval()(bottom(x)), model(x), atol=1e-4, rtol=1e-4
        )
    assert not any(p.requires_grad for p in bottom.parameters()) and not bottom.training
    assert len(bottom) == 2 + 5  # stem and stages 1-5
    assert "blocks.6.0.conv_pw.weight" in dict(top.named_parameters())
    assert not any(
        n.startswith(("blocks.4.", "conv_stem")) for n, _ in top.named_parameters()
    )
    with torch.no_grad():
        top.blocks[6][0].conv_pw.weight.add_(1.0)
    model.load_state_dict(top.state_dict(), strict=False)
    assert torch.equal(
        model.blocks[6][0].conv_pw.weight, top.blocks[6][0].conv_pw.weight
    )
    with pytest.raises(ValueError, match="Cut after a stage"):
        stages.split_at_stage(model, 7)
    with pytest.raises(TypeError):
        stages.split_at_stage(nn.Linear(2, 2), 1)
