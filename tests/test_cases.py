"""Tests for tlutils.cases (chapter 3): the four-case rule, a model per strategy."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

import tlutils as tl
from tlutils import cases

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def lite0_pretrained() -> torch.nn.Module:
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
def test_recommend_case_quadrants(
    per_class: int, similar: bool, case: int, strategy: str
) -> None:
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


def _trainable(model: torch.nn.Module) -> int:
    return tl.count_parameters(model)[0]


def test_create_strategy_model_strategies(lite0_pretrained: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 64, 64)
    probe = cases.create_strategy_model("linear_probe", 5, model=lite0_pretrained)
    assert _trainable(probe) == 1280 * 5 + 5
    assert probe(x).shape == (2, 5)
    cut = cases.create_strategy_model(
        "cut_probe", 5, cut_stage=4, model=lite0_pretrained
    )
    assert _trainable(cut) == 80 * 5 + 5
    assert cut(x).shape == (2, 5)
    fine = cases.create_strategy_model("fine_tune", 3, model=lite0_pretrained)
    assert _trainable(fine) == tl.count_parameters(fine)[1]
    assert torch.equal(fine.conv_stem.weight, lite0_pretrained.conv_stem.weight)
    scratch = cases.create_strategy_model("scratch", 3)
    assert _trainable(scratch) == _trainable(fine)
    assert not torch.equal(scratch.conv_stem.weight, lite0_pretrained.conv_stem.weight)
    assert all(
        p.requires_grad for p in lite0_pretrained.parameters()
    )  # the model passed in is copied, not changed


@pytest.mark.parametrize(("cut_stage", "channels"), [(0, 32), (1, 16), (8, 1280)])
def test_cut_probe_at_the_ends_of_the_numbering(
    lite0_pretrained: torch.nn.Module, cut_stage: int, channels: int
) -> None:
    cut = cases.create_strategy_model(
        "cut_probe", 3, cut_stage=cut_stage, model=lite0_pretrained
    )
    assert _trainable(cut) == channels * 3 + 3
    assert (
        cut.classifier.in_features
        == tl.stages.stage_channels(lite0_pretrained)[cut_stage]
    )
    body = tl.stages.body_to_stage(lite0_pretrained, cut_stage)
    assert len(cut.body) == len(body)
    assert cut.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_cut_probe_logits_come_from_the_stage_features(
    lite0_pretrained: torch.nn.Module,
) -> None:
    x = torch.randn(2, 3, 64, 64)
    cut = cases.create_strategy_model(
        "cut_probe", 4, cut_stage=2, model=lite0_pretrained
    ).eval()
    feats = tl.stages.StageFeatures(lite0_pretrained, stages=[2])(x)
    with torch.no_grad():
        assert torch.allclose(cut(x), cut.classifier(feats), atol=1e-5)


def test_create_strategy_model_errors(lite0_pretrained: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="Unknown strategy"):
        cases.create_strategy_model("freeze_half", 5, model=lite0_pretrained)
    with pytest.raises(ValueError, match="Unknown strategy"):  # the old name
        cases.create_strategy_model("finetune", 5, model=lite0_pretrained)
    with pytest.raises(ValueError, match="num_classes"):
        cases.create_strategy_model("fine_tune", 1, model=lite0_pretrained)
    with pytest.raises(ValueError, match="stage is an integer from 0 to 8"):
        cases.create_strategy_model(
            "cut_probe", 5, cut_stage=12, model=lite0_pretrained
        )
    with pytest.raises(TypeError, match="EfficientNet-Lite0"):
        cases.create_strategy_model("linear_probe", 5, model=torch.nn.Linear(3, 3))


def test_every_recommended_strategy_has_a_model() -> None:
    assert cases.STRATEGIES == ("linear_probe", "cut_probe", "fine_tune", "scratch")
    recommended = {
        cases.recommend_case(n, similar).strategy
        for n in (10, 1000)
        for similar in (True, False)
    }
    assert recommended <= set(cases.STRATEGIES)


def test_decision_guide_figure() -> None:
    fig = cases.plot_decision_guide({1: "measured: 0.9"})
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum("Case" in t for t in texts) == 4
    assert "measured: 0.9" in texts


def test_decision_guide_keeps_every_text_inside_its_quadrant() -> None:
    """Long measured notes are wrapped: no label runs into a neighbouring quadrant."""
    note = (
        "measured: the linear probe best on average (85%); not told apart from the "
        "cut probe, not told apart from fine-tuning"
    )
    fig = cases.plot_decision_guide({case: note for case in (1, 2, 3, 4)})
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_data = ax.transData.inverted()
    assert len(ax.texts) == 12
    for text in ax.texts:
        x, y = text.get_position()
        (x0, y0), (x1, y1) = to_data.transform(text.get_window_extent(renderer))
        left, bottom = int(x), int(y)  # the quadrant the text belongs to
        assert left < x0 and x1 < left + 1, text.get_text()
        assert bottom < y0 and y1 < bottom + 1, text.get_text()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    for i, box in enumerate(boxes):  # and no two texts overlap
        assert not any(box.overlaps(other) for other in boxes[i + 1 :])


def test_load_cell_data_gives_both_notebooks_the_same_subsets(tmp_path, monkeypatch):
    """Chapter 3's one place for its data: large, small draws inside it, validation."""
    from types import SimpleNamespace

    from helpers import write_image

    for split, n in [("train", 9), ("val", 4)]:
        for c, colour in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
            for i in range(n):
                write_image(tmp_path / split / f"class{c}" / f"{i}.png", colour)

    def fake_load_dataset(name, train_transform=None, val_transform=None):
        assert name == "eurosat"
        train = tl.ImageFolder(tmp_path / "train", train_transform)
        val = tl.ImageFolder(tmp_path / "val", val_transform)
        return SimpleNamespace(train=train, val=val, classes=train.classes)

    monkeypatch.setattr(cases, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(cases, "N_LARGE", 6)
    monkeypatch.setattr(cases, "N_VAL", 3)
    monkeypatch.setattr(cases, "N_SMALL", 2)
    config = tl.data_config(tl.create_model(pretrained=False))
    cell = cases.load_cell_data("eurosat", config)
    again = cases.load_cell_data("eurosat", config)
    assert cell.image_size == cases.IMAGE_SIZE["eurosat"] == 64
    assert cell.classes == ["class0", "class1", "class2"]
    assert len(cell.large) == 18 and len(cell.val) == 12  # every validation image
    assert cell.large.indices == again.large.indices  # seeded: the same every time
    assert list(cell.large_augmented.indices) == list(cell.large.indices)
    labels = tl.targets_of(cell.large)
    for seed, rows in cell.small.items():
        assert sorted(labels[r] for r in rows) == [0, 0, 1, 1, 2, 2], seed
        assert rows == again.small[seed]
    assert len({tuple(sorted(rows)) for rows in cell.small.values()}) > 1
    assert tuple(cell.small) == cases.SMALL_DRAWS
    full = cases.load_cell_data("eurosat", config, full=True, image_size=32)
    assert (len(full.large), len(full.val), full.image_size) == (27, 12, 32)
    x, _ = cell.val[0]
    assert tuple(x.shape) == (3, 64, 64)
    # A seeded subset of N_VAL validation images per class, for costly arms.
    sub = cases.val_subset(cell)
    assert sorted(tl.targets_of(cell.val)[r] for r in sub) == [
        0,
        0,
        0,
        1,
        1,
        1,
        2,
        2,
        2,
    ]
    assert sub.tolist() == cases.val_subset(again).tolist()
    assert len(set(sub.tolist())) == 9 and len(cases.val_subset(cell, 2)) == 6
    # The same images at another size, for chapter 3's size test.
    resized, rows = cases.resized_cell(cell, config, image_size=32, per_class=4)
    assert len(resized.large) == 12 and resized.image_size == 32
    assert [cell.large.indices[r] for r in rows] == list(resized.large.indices)
    assert list(resized.val.indices) == list(cell.val.indices)
    assert tuple(resized.large[0][0].shape) == (3, 32, 32)
    assert all(len(d) == 6 for d in resized.small.values())
    # ... and on chosen validation rows only: the same images as cell.val[sub].
    fewer, _ = cases.resized_cell(cell, config, 32, per_class=4, val_rows=sub)
    assert list(fewer.val.indices) == [cell.val.indices[r] for r in sub]
    assert fewer.val[0][1] == cell.val[int(sub[0])][1]


def test_probe_head_is_the_linear_probe() -> None:
    """The warmed-up head predicts what tl.linear_probe_accuracy's probe predicts."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 8)) + y[:, None] * rng.normal(size=8) + 5.0
    xv = rng.normal(size=(30, 8)) + np.repeat(np.arange(3), 10)[:, None]
    yv = np.repeat(np.arange(3), 10)
    head = tl.probe.probe_head(x, y, C=1.0)
    with torch.no_grad():
        pred = head(torch.as_tensor(xv, dtype=torch.float32)).argmax(1).numpy()
    assert np.isclose(
        (pred == yv).mean(), tl.linear_probe_accuracy(x, y, xv, yv, C=1.0)
    )
    chosen = tl.probe.probe_head(x, y)  # C chosen on the training rows
    with torch.no_grad():
        pred = chosen(torch.as_tensor(xv, dtype=torch.float32)).argmax(1).numpy()
    assert np.isclose((pred == yv).mean(), tl.linear_probe_accuracy(x, y, xv, yv))
    two = tl.probe.probe_head(x[:40], y[:40])  # two classes: two logits
    assert two.out_features == 2


class _Labels(torch.utils.data.Dataset):
    """A dataset of labels only (no images), enough for the row bookkeeping."""

    def __init__(self, targets: list[int]) -> None:
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return torch.zeros(1), self.targets[i]


def _tiny_cell() -> cases.CellData:
    from torch.utils.data import Subset

    data = _Labels([0] * 60 + [1] * 60)
    large = Subset(data, list(range(0, 120, 2)) + list(range(1, 120, 2)))
    return cases.CellData("eurosat", ["a", "b"], 64, large, data, {}, large)


def test_choose_stage_scores_on_held_out_training_rows() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 30)
    good = torch.as_tensor(y[:, None] * 3.0 + rng.normal(size=(60, 4)))
    noise = torch.as_tensor(rng.normal(size=(60, 4)))
    fit, held = np.arange(0, 60, 2), np.arange(1, 60, 2)
    choice = tl.probe.choose_stage({3: noise, 5: good}, y, (fit, held), [3, 5])
    stage, scores = choice.stage, choice.scores
    assert stage == 5 and scores[5] > scores[3] and set(scores) == {3, 5}
    # A stage that is only good on rows outside fit and held cannot be chosen.
    tricky = noise.clone()
    tricky[:2] = 100.0
    stage = tl.probe.choose_stage(
        {3: tricky, 5: good}, y, (fit[1:], held[1:]), [3, 5]
    ).stage
    assert stage == 5


def test_selection_split_keeps_to_training_rows(tmp_path, monkeypatch) -> None:
    import numpy as np

    monkeypatch.setenv("TLUTILS_CACHE", str(tmp_path))
    cell = _tiny_cell()
    y = np.asarray(tl.targets_of(cell.large))
    fit, held = cases.selection_split(cell, y, "large")
    assert not set(fit) & set(held) and len(fit) + len(held) == len(y)
    fit, held = cases.selection_split(cell, y, "small")
    assert not set(fit) & set(held)
    assert np.bincount(y[fit]).tolist() == [cases.N_SMALL] * 2
    assert np.bincount(y[held]).tolist() == [30] * 2
    with pytest.raises(ValueError, match="small' or 'large"):
        cases.selection_split(cell, y, "medium")


def test_top_stages() -> None:
    assert cases.top_stages(0) == [] and cases.top_stages(2) == [7, 8]
    assert cases.top_stages(9) == list(range(9))
    with pytest.raises(ValueError, match="from 0 to 9"):
        cases.top_stages(10)


def test_cached_maps_and_train_top(lite0_pretrained, tmp_path, monkeypatch) -> None:
    """One pass caches pooled features and bottom maps; the top on the maps is the model."""
    import numpy as np

    monkeypatch.setenv("TLUTILS_CACHE", str(tmp_path))
    images = torch.randn(6, 3, 64, 64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    dataset = torch.utils.data.TensorDataset(images, labels)
    net = cases._StagesAndMaps(lite0_pretrained, (5, 6))
    flat = net(images)
    channels = tl.stages.stage_channels(lite0_pretrained)
    assert flat.shape[1] == sum(channels) + 112 * 4 * 4 + 192 * 2 * 2
    pooled_final = flat[:, sum(channels[:8]) : sum(channels)]
    maps5 = flat[:, sum(channels) : sum(channels) + 112 * 16].reshape(-1, 112, 4, 4)
    head = tl.probe.probe_head(pooled_final.numpy(), labels.numpy())
    quick = cases.QUICK.replace(epochs=1, batch_size=32)
    top = cases.train_top(
        lite0_pretrained, 5, maps5, labels, head, quick.replace(stages=())
    )
    model = tl.replace_head(
        tl.create_model(pretrained=True), 3, head=torch.nn.Linear(1280, 3)
    )
    model.classifier.load_state_dict(head.state_dict())
    with torch.no_grad():
        assert torch.allclose(top(maps5), model.eval()(images), atol=1e-3)
    right = cases.top_correct(top, maps5, labels)
    assert right.dtype == bool and right.tolist() == (
        (model(images).argmax(1) == labels).tolist()
    )
    assert cases.top_accuracy(top, maps5, labels) == right.mean()
    recipe = quick.replace(stages=(7, 8), lr=1e-3)
    trained = cases.train_top(lite0_pretrained, 5, maps5, labels, head, recipe, seed=0)
    again = cases.train_top(lite0_pretrained, 5, maps5, labels, head, recipe, seed=0)
    w = trained.state_dict()["blocks.6.0.conv_pw.weight"]
    assert torch.equal(w, again.state_dict()["blocks.6.0.conv_pw.weight"])
    assert not torch.equal(
        w, lite0_pretrained.state_dict()["blocks.6.0.conv_pw.weight"]
    )
    assert torch.equal(  # stage 6 stayed frozen
        trained.state_dict()["blocks.5.0.conv_pw.weight"],
        lite0_pretrained.state_dict()["blocks.5.0.conv_pw.weight"],
    )
    with pytest.raises(ValueError, match="above the cached bottom"):
        cases.train_top(
            lite0_pretrained, 6, maps5, labels, head, recipe.replace(stages=(6, 7))
        )
    assert np.asarray(dataset.tensors[1]).shape == (6,)


def test_recommend_case_carries_the_measured_verdict() -> None:
    measured = {2: "measured: fine-tune beats the probe"}
    assert cases.recommend_case(10, False, measured=measured).measured == measured[2]
    assert cases.recommend_case(10, True, measured=measured).measured == ""
    assert cases.recommend_case(10, True).measured == ""


def test_fine_tune_score_reads_a_repeated_run_from_the_cache(
    lite0_pretrained, tmp_path, monkeypatch
) -> None:
    """The same run is trained once; any changed input trains again; damage recomputes."""
    monkeypatch.setenv("TLUTILS_CACHE", str(tmp_path))
    torch.manual_seed(0)
    maps6 = torch.randn(8, 192, 2, 2)
    labels = torch.tensor([0, 1] * 4)
    head = torch.nn.Linear(1280, 2)
    score = (maps6[:4], labels[:4])
    calls = []
    train_top = cases.train_top

    def counted(*args, **kwargs):
        calls.append(args[5].lr)  # the recipe's learning rate
        return train_top(*args, **kwargs)

    monkeypatch.setattr(cases, "train_top", counted)

    def run(lr=1e-3, inputs=maps6):
        recipe = cases.QUICK.replace(stages=(7, 8), epochs=1, lr=lr)
        return cases.fine_tune_score(
            lite0_pretrained, 6, inputs, labels, head, recipe, score
        )

    def same(a, b) -> bool:
        return a[0].tolist() == b[0].tolist() and a[1] == b[1]

    first = run()
    assert calls == [1e-3] and first[1] > 0
    # Which of the scored images were right, in their order: what the verdict rule pairs.
    assert first[0].dtype == bool and first[0].shape == (4,)
    assert same(run(), first) and calls == [1e-3]  # read, not trained
    run(lr=1e-4)
    run(inputs=maps6 + 1)
    assert calls == [1e-3, 1e-4, 1e-3]
    for path in (tmp_path / "results").iterdir():
        path.write_text("{not json")  # a damaged file is recomputed, never trusted
    again = run()
    assert len(calls) == 4 and again[0].tolist() == first[0].tolist()  # seeded
    assert same(run(), again) and len(calls) == 4  # and stored again
    import json

    path = max((tmp_path / "results").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    stored = json.loads(path.read_text())
    assert stored["correct"] == "".join("1" if c else "0" for c in first[0])
    for damaged in (
        {"accuracy": 0.5, "seconds": 1.0},  # no per-image record: recomputed
        {**stored, "correct": "101"},  # scored on other images: recomputed
        {**stored, "correct": "10x1"},
    ):
        path.write_text(json.dumps(damaged))
        before = len(calls)
        assert run()[0].tolist() == first[0].tolist() and len(calls) == before + 1
    assert not list((tmp_path / "results").glob("*.tmp"))
