"""Tests for tlutils.cases (chapter 3): the four-case rule, strategy models, stage features."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from PIL import Image

import tlutils as tl
from tlutils import cases

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return tl.create_model(pretrained=True)


@pytest.mark.parametrize(
    ("per_class", "similar", "case", "strategy"),
    [
        (10, True, 1, "linear_probe"),
        (10, False, 2, "cut_probe"),
        (1000, True, 3, "fine_tune"),
        (1000, False, 4, "fine_tune"),
        (99, True, 1, "linear_probe"),
        (100, True, 3, "fine_tune"),
        (1, False, 2, "cut_probe"),
    ],
)
def test_recommend_case_quadrants(per_class: int, similar: bool, case: int, strategy: str) -> None:
    rec = cases.recommend_case(per_class, similar)
    assert rec.case == case
    assert rec.strategy == strategy
    assert rec.size == ("small" if per_class < cases.SMALL_MAX_PER_CLASS else "large")
    assert rec.similarity == ("similar" if similar else "different")
    assert rec.advice


def test_recommend_case_accepts_whole_floats_and_numpy_ints() -> None:
    import numpy as np

    assert cases.recommend_case(10.0, True).case == 1
    assert cases.recommend_case(np.int64(500), False).case == 4


def test_recommend_case_threshold_is_a_parameter() -> None:
    assert cases.recommend_case(50, True, small_max_per_class=20).case == 3
    assert cases.recommend_case(50, True, small_max_per_class=500).case == 1


@pytest.mark.parametrize("bad", [0, -5, float("nan"), math.inf, -0.5, 10.5])
def test_recommend_case_rejects_nonsense_sizes(bad: float) -> None:
    with pytest.raises(ValueError):
        cases.recommend_case(bad, True)


@pytest.mark.parametrize("bad", ["100", None, True, [10]])
def test_recommend_case_rejects_non_numbers(bad: object) -> None:
    with pytest.raises(TypeError):
        cases.recommend_case(bad, True)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["yes", 1, None, 0.5])
def test_recommend_case_needs_a_boolean_judgement(bad: object) -> None:
    with pytest.raises(TypeError, match="True or False"):
        cases.recommend_case(10, bad)  # type: ignore[arg-type]


def test_recommend_case_rejects_bad_threshold() -> None:
    with pytest.raises(ValueError):
        cases.recommend_case(10, True, small_max_per_class=1)


def test_stage_channels_of_lite0(lite0: torch.nn.Module) -> None:
    assert cases.stage_channels(lite0) == [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    assert len(cases.STAGE_NAMES) == cases.NUM_STAGES == 9


def test_stage_features_match_the_models_own_pooled_features(lite0: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    extractor = cases.StageFeatures(lite0)
    out = extractor(x)
    assert out.shape == (2, sum(cases.stage_channels(lite0)))
    lite0.eval()
    with torch.no_grad():
        reference = lite0.forward_head(lite0.forward_features(x), pre_logits=True)
        stage4 = lite0.blocks[:4](lite0.bn1(lite0.conv_stem(x))).mean((2, 3))
    assert torch.allclose(out[:, -1280:], reference, atol=1e-5)
    start = sum(cases.stage_channels(lite0)[:4])
    assert torch.allclose(out[:, start : start + 80], stage4, atol=1e-5)


def test_stage_features_do_not_change_the_model(lite0: torch.nn.Module) -> None:
    cases.StageFeatures(lite0, stages=[2, 5])
    assert all(p.requires_grad for p in lite0.parameters())


def test_stage_features_subset_and_errors(lite0: torch.nn.Module) -> None:
    out = cases.StageFeatures(lite0, stages=[5, 2])(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 24 + 112)
    with pytest.raises(ValueError, match="cut stage"):
        cases.StageFeatures(lite0, stages=[9])
    with pytest.raises(ValueError):
        cases.StageFeatures(lite0, stages=[])
    with pytest.raises(TypeError, match="EfficientNet-Lite0"):
        cases.StageFeatures(torch.nn.Linear(3, 3))


def test_stage_features_cached_and_split(lite0: torch.nn.Module, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TLUTILS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "images"
    for c, color in enumerate(["red", "blue"]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), color).save(root / f"class{c}" / f"{i}.png")
    dataset = tl.ImageFolder(root, transform=tl.create_transform(image_size=32))
    feats, labels = cases.stage_features(lite0, dataset, stages=[1, 8], progress=False)
    assert sorted(feats) == [1, 8]
    assert feats[1].shape == (6, 16) and feats[8].shape == (6, 1280)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 1
    again, _ = cases.stage_features(lite0, dataset, stages=[1, 8], progress=False)
    assert torch.equal(again[8], feats[8])
    cases.stage_features(lite0, dataset, stages=[1, 7], progress=False)  # other stages: another cache entry
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 2


def _trainable(model: torch.nn.Module) -> int:
    return tl.count_parameters(model)[0]


def test_build_model_strategies(lite0: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    probe = cases.build_model("linear_probe", 5, model=lite0)
    assert _trainable(probe) == 1280 * 5 + 5
    assert probe(x).shape == (2, 5)
    cut = cases.build_model("cut_probe", 5, cut_stage=4, model=lite0)
    assert _trainable(cut) == 80 * 5 + 5
    assert cut(x).shape == (2, 5)
    fine = cases.build_model("fine_tune", 3, model=lite0)
    assert _trainable(fine) == tl.count_parameters(fine)[1]
    assert torch.equal(fine.conv_stem.weight, lite0.conv_stem.weight)
    scratch = cases.build_model("scratch", 3)
    assert _trainable(scratch) == _trainable(fine)
    assert not torch.equal(scratch.conv_stem.weight, lite0.conv_stem.weight)
    assert all(p.requires_grad for p in lite0.parameters())  # the model passed in is copied, not changed


def test_cut_probe_logits_come_from_the_stage_features(lite0: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    cut = cases.build_model("cut_probe", 4, cut_stage=2, model=lite0).eval()
    feats = cases.StageFeatures(lite0, stages=[2])(x)
    with torch.no_grad():
        assert torch.allclose(cut(x), cut.head(feats), atol=1e-5)


def test_build_model_errors(lite0: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="Unknown strategy"):
        cases.build_model("freeze_half", 5, model=lite0)
    with pytest.raises(ValueError, match="num_classes"):
        cases.build_model("fine_tune", 1, model=lite0)
    with pytest.raises(ValueError, match="cut stage"):
        cases.build_model("cut_probe", 5, cut_stage=12, model=lite0)


def test_decision_guide_figure() -> None:
    fig = cases.plot_decision_guide({1: "measured: 0.9"})
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum("Case" in t for t in texts) == 4
    assert "measured: 0.9" in texts
