"""Save, load and export a trained model; foreign and damaged files are refused (chapter 5)."""

import json

import pytest
import torch
from helpers import photo_folder

import tlutils as tl
from tlutils.checkpoint import TrainedModel, trained_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Lite0 with a new 3-class head (weights perturbed, so a load must restore them)."""
    model = tl.create_model()
    tl.replace_head(model, 3)
    with torch.no_grad():
        model.conv_stem.weight.add_(0.01)
    return trained_model(
        model.eval(), ["a", "b", "c"], "efficientnet_lite0", 64, tl.History([1.0])
    )


def test_save_load_round_trip_on_cpu(trained, tmp_path):
    path = tl.save_model(trained, tmp_path / "model.pt")
    loaded = tl.load_model(path)
    assert isinstance(loaded, TrainedModel)
    assert loaded.classes == ["a", "b", "c"]
    assert loaded.preprocessing["image_size"] == 64
    assert loaded.history["train_loss"] == [1.0]
    assert next(loaded.model.parameters()).device.type == "cpu"
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(loaded.model(x), trained.model(x), atol=1e-5)
    # the saved preprocessing rebuilds the evaluation transform
    assert repr(loaded.transform()) == repr(trained.transform())
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file
    # the history comes back as a History (the extra "report" key of training is dropped)
    loaded.history["report"] = "per-class report"
    assert loaded.fit_history() == tl.History([1.0])


def test_a_gpu_checkpoint_loads_on_the_cpu(trained, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU to write a GPU checkpoint")
    trained.model.cuda()
    try:
        path = tl.save_model(trained, tmp_path / "gpu.pt")
    finally:
        trained.model.cpu()
    assert next(tl.load_model(path).model.parameters()).device.type == "cpu"


def test_a_cut_probe_round_trips_and_exports(tmp_path):
    from tlutils.stages import CutModel, StageFeatures

    base = tl.create_model().eval()
    cut = CutModel(base, 4, 3).eval()
    with torch.no_grad():
        cut.classifier.weight.normal_()
    trained = trained_model(cut, ["a", "b", "c"], "efficientnet_lite0", 64)
    assert trained.preprocessing["mean"] == list(tl.data_config(base)["mean"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # the cut body computes stage 4's pooled features
        features = StageFeatures(base, [4])(x)
        assert torch.allclose(cut.pool(cut.body(x)), features, atol=1e-5)
    loaded = tl.load_model(tl.save_model(trained, tmp_path / "cut.pt"))
    assert isinstance(loaded.model, CutModel) and loaded.model.cut_stage == 4
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), cut(x), atol=1e-5)
    module, meta = tl.load_exported(tl.export_model(loaded, tmp_path / "cut.pt2"))
    assert meta["classes"] == ["a", "b", "c"]
    assert torch.allclose(module(x), cut(x), atol=1e-5)


def test_export_matches_the_original(trained, tmp_path):
    path = tl.export_model(trained, tmp_path / "model.pt2")
    module, meta = tl.load_exported(path)
    assert meta["classes"] == ["a", "b", "c"] and meta["image_size"] == 64
    for batch in (1, 5):  # the batch size is free
        x = torch.randn(batch, 3, 64, 64)
        assert torch.allclose(module(x), trained.model(x), atol=1e-5)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tl.load_model(tmp_path / "nope.pt")


def test_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="not a tlutils checkpoint"):
        tl.load_model(path)
    torch.save({"meta": json.dumps({"format": "other"}), "state_dict": {}}, path)
    with pytest.raises(ValueError, match="no 'tlutils-model' tag"):
        tl.load_model(path)


def test_a_pickled_object_is_never_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"meta": tl.History(), "state_dict": {}}, path)  # an arbitrary class
    with pytest.raises(ValueError, match="not a tlutils checkpoint"):
        tl.load_model(path)


def test_damaged_and_non_torch_files_are_refused(trained, tmp_path):
    path = tl.save_model(trained, tmp_path / "model.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut short, as by an interrupted copy
    with pytest.raises(ValueError, match="damaged"):
        tl.load_model(path)
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="not a tlutils checkpoint"):
        tl.load_model(text)


def test_incompatible_architecture_is_refused(trained, tmp_path):
    other = TrainedModel(
        trained.model, trained.classes, "resnet18", trained.preprocessing
    )
    path = tl.save_model(other, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="do not fit architecture 'resnet18'"):
        tl.load_model(path)


def test_predict_images_with_a_checkpoint(trained, tmp_path):
    folder = photo_folder(tmp_path / "photos", classes=("cats",), n=3)
    path = tl.save_model(trained, tmp_path / "model.pt")
    rows = tl.predict_images(path, folder, top_k=2)
    assert [r.file.rsplit("/", 1)[-1] for r in rows] == ["0.jpg", "1.png", "2.png"]
    for row in rows:
        assert len(row.classes) == 2 and set(row.classes) <= {"a", "b", "c"}
        assert row.probabilities[0] >= row.probabilities[1] > 0
    one = tl.predict_images(trained, folder / "cats" / "1.png", top_k=10)
    assert len(one) == 1 and len(one[0].classes) == 3  # top_k capped at the classes
    assert sum(one[0].probabilities) == pytest.approx(1.0, abs=1e-4)


def test_predict_on_a_missing_path(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tl.predict_images(trained, tmp_path / "nowhere")


def test_predict_skips_unreadable_images_with_a_warning(trained, tmp_path):
    folder = photo_folder(tmp_path / "photos", classes=("cats",), n=2)
    (folder / "cats" / "broken.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="broken.jpg"):
        rows = tl.predict_images(trained, folder)
    assert len(rows) == 2


def test_the_temperature_is_saved_loaded_exported_and_used(trained, tmp_path):
    import copy

    tempered = copy.copy(trained)
    tempered.temperature = 2.5
    loaded = tl.load_model(tl.save_model(tempered, tmp_path / "t.pt"))
    assert loaded.temperature == 2.5
    assert tl.load_model(tl.save_model(trained, tmp_path / "p.pt")).temperature == 1.0
    _, meta = tl.load_exported(tl.export_model(tempered, tmp_path / "t.pt2"))
    assert meta["temperature"] == 2.5
    folder = photo_folder(tmp_path / "photos", classes=("cats",), n=1)
    hot = tl.predict_images(loaded, folder, top_k=3)[0].probabilities
    cold = tl.predict_images(loaded, folder, top_k=3, temperature=1.0)[0].probabilities
    assert max(hot) < max(cold)  # a higher temperature: less sure


def test_a_file_of_the_previous_format_loads_without_a_temperature(trained, tmp_path):
    path = tl.save_model(trained, tmp_path / "old.pt")
    stored = torch.load(path, weights_only=True)
    meta = json.loads(stored["meta"])
    del meta["temperature"]
    meta["version"] = 2
    torch.save({"meta": json.dumps(meta), "state_dict": stored["state_dict"]}, path)
    assert tl.load_model(path).temperature == 1.0
