"""Tests for tlutils.stages (chapters 2-4): one numbering of Lite0's stages."""

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
    """The architecture with random weights, in eval mode (no weights file)."""
    torch.manual_seed(0)
    return tl.create_model(pretrained=False).eval()


def test_numbering_is_timms_own(lite0_random):
    assert len(stages.STAGE_NAMES) == stages.NUM_STAGES == 9
    assert stages.STAGE_NAMES[0] == "stem" and stages.STAGE_NAMES[8] == "head conv"
    assert stages.STAGE_NAMES[1:8] == tuple(f"stage {i}" for i in range(1, 8))
    modules = stages.stage_modules(lite0_random)
    assert modules[0] == ["conv_stem", "bn1"] and modules[8] == ["conv_head", "bn2"]
    assert modules[1:8] == [[f"blocks.{i}"] for i in range(7)]
    for info in lite0_random.feature_info:  # timm calls blocks.k "stage k + 1" too
        assert modules[info["stage"]] == [info["module"]]
    assert stages.head_modules(lite0_random) == ["classifier"]


def test_stage_channels_agree_with_timm(lite0_random):
    channels = stages.stage_channels(lite0_random)
    assert channels == CHANNELS
    timm_channels = {f["stage"]: f["num_chs"] for f in lite0_random.feature_info}
    assert sorted(timm_channels) == [1, 2, 3, 5, 7]  # timm's feature_info indices 0-4
    assert {s: channels[s] for s in timm_channels} == timm_channels


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
    assert table.loc[0, "timm modules"] == "conv_stem, bn1"
    assert table.loc[8, "timm modules"] == "conv_head, bn2"
    assert table["name"].tolist() == list(stages.STAGE_NAMES)
    small = stages.stage_table(lite0_random, image_size=64)
    assert small["map size"].tolist()[1:8:2] == ["32x32", "8x8", "4x4", "2x2"]


def hooked_outputs(model, x):
    """Stage number -> output of its last module, caught by forward hooks."""
    last_modules = {0: model.bn1, 8: model.bn2}
    last_modules.update({k: model.blocks[k - 1] for k in range(1, 8)})
    captured = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o, k=k: captured.setdefault(k, o))
        for k, module in last_modules.items()
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def test_stage_outputs_match_forward_hooks(lite0_random):
    x = torch.randn(2, 3, 32, 32)
    captured = hooked_outputs(lite0_random, x)
    outs = stages.stage_outputs(lite0_random, x, list(range(9)))
    for k in range(9):  # stage k (1-7) is what blocks[k - 1] returns
        assert torch.allclose(outs[k], captured[k], atol=1e-5), k
    two, seven, eight, zero = stages.stage_outputs(lite0_random, x, [2, 7, 8, 0])
    assert torch.allclose(two, captured[2], atol=1e-5)
    assert torch.allclose(seven, captured[7], atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(eight, lite0_random.forward_features(x), atol=1e-5)
        stem = lite0_random.bn1(lite0_random.conv_stem(x))
    assert torch.allclose(zero, stem, atol=1e-5)
    (alone,) = stages.stage_outputs(lite0_random, x, [8])  # stage 8 without others
    assert torch.allclose(alone, eight, atol=1e-5)


def test_old_feature_info_indices_are_these_stage_numbers(lite0_random):
    # layers.stage_outputs(model, x, [0, 1, 2, 3, 4]) used timm's feature_info
    # indices; the same maps are stages [1, 2, 3, 5, 7] now.
    x = torch.randn(2, 3, 64, 64)
    outs = stages.stage_outputs(lite0_random, x, [1, 2, 3, 5, 7])
    assert [o.shape[1] for o in outs] == [16, 24, 40, 112, 320]
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4, 2]
    with torch.no_grad():
        timm_maps = lite0_random.forward_intermediates(
            x, indices=[1, 2, 3, 5, 7], intermediates_only=True, extra_blocks=True
        )
    for ours, theirs in zip(outs, timm_maps, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)
    assert "conv_head.weight" in lite0_random.state_dict()  # the model is not cut


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
        stages.stage_outputs(lite0_random, x, [-1])  # no negative indices any more
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
    x = torch.randn(2, 3, 32, 32)
    out = stages.StageFeatures(lite0_random)(x)
    assert out.shape == (2, sum(CHANNELS))
    captured = hooked_outputs(lite0_random, x)
    pooled = torch.cat([captured[k].mean((2, 3)) for k in range(9)], dim=1)
    assert torch.allclose(out, pooled, atol=1e-5)
    with torch.no_grad():
        pre_logits = lite0_random.forward_head(
            lite0_random.forward_features(x), pre_logits=True
        )
        stage4 = lite0_random.blocks[:4](lite0_random.bn1(lite0_random.conv_stem(x)))
    assert torch.allclose(out[:, -1280:], pre_logits, atol=1e-5)
    start = sum(CHANNELS[:4])
    assert torch.allclose(out[:, start : start + 80], stage4.mean((2, 3)), atol=1e-5)
    subset = stages.StageFeatures(lite0_random, [5, 2])(x)
    assert subset.shape == (2, 24 + 112)  # in stage order, whatever the order given
    expected = torch.cat([captured[2].mean((2, 3)), captured[5].mean((2, 3))], dim=1)
    assert torch.allclose(subset, expected, atol=1e-5)
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
    lite0_random, tmp_path, tmp_cache
):
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
    cache = tmp_cache / "features"
    assert len(list(cache.glob("*.pt"))) == 1
    again, _ = tl.stage_features(lite0_random, dataset, stages=[1, 8], progress=False)
    assert torch.equal(again[8], feats[8])
    tl.stage_features(lite0_random, dataset, stages=[1, 7], progress=False)
    assert len(list(cache.glob("*.pt"))) == 2


def test_body_to_stage_shares_modules(lite0_random):
    body = stages.body_to_stage(lite0_random, 3)
    assert len(body) == 2 + 3 and body[0] is lite0_random.conv_stem
    assert body[-1] is lite0_random.blocks[2]
    assert len(stages.body_to_stage(lite0_random, 0)) == 2
    assert len(stages.body_to_stage(lite0_random, 8)) == 2 + 7 + 2
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        (stage3,) = stages.stage_outputs(lite0_random, x, [3])
        assert torch.allclose(body(x), stage3, atol=1e-5)


def test_split_at_stage_is_exact():
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
    # The top keeps the stage numbers: what is left to train is stages 6-8, the head.
    names = [g["name"] for g in tl.finetune.param_groups(top, 1e-3)]
    assert names == ["stage 6", "stage 7", "stage 8", "head"]
    with torch.no_grad():
        top.blocks[6][0].conv_pw.weight.add_(1.0)
    model.load_state_dict(top.state_dict(), strict=False)
    assert torch.equal(
        model.blocks[6][0].conv_pw.weight, top.blocks[6][0].conv_pw.weight
    )
    with pytest.raises(ValueError, match="Cut after a stage"):
        stages.split_at_stage(model, 7)
    with pytest.raises(ValueError, match="from 0 to 8"):
        stages.split_at_stage(model, -1)
    with pytest.raises(TypeError):
        stages.split_at_stage(nn.Linear(2, 2), 1)


@pytest.mark.parametrize("stage", [0, 6])
def test_split_at_the_first_and_last_allowed_stage(stage):
    torch.manual_seed(0)
    model = tl.create_model(pretrained=False, num_classes=3).eval()
    bottom, top = stages.split_at_stage(model, stage)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (cut,) = stages.stage_outputs(model, x, [stage])
        torch.testing.assert_close(bottom(x), cut)
        torch.testing.assert_close(top.eval()(cut), model(x), atol=1e-4, rtol=1e-4)
    assert len(bottom) == 2 + stage
    first = tl.finetune.param_groups(top, 1e-3)[0]["name"]
    assert first == f"stage {stage + 1}"
