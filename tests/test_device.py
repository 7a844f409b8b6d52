"""Device mistakes caught without a GPU (issue 30).

Two tools stand in for a GPU: PyTorch's ``meta`` device (tensors with a shape but no
data: code that keeps a model and its inputs on one device fails there only with "cannot
copy out of meta" or a meta-tensor error, never with "expected all tensors to be on the
same device"), and fingerprints of a caller's model taken before and after a call (device,
float type, memory format and trainability of every parameter, and the train/eval mode):
a function that moves or changes the model it was given shows up on a CPU too.
"""

import copy
import re

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

import tlutils as tl
from tlutils import checkpoint, features, train

MIXED_DEVICES = re.compile(r"same device|expected .*device|device type", re.I)


def fingerprint(model: nn.Module) -> dict:
    """Everything about a model that a call on another device could change."""
    params = {
        name: (
            p.device,
            p.dtype,
            p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last),
            p.requires_grad,
        )
        for name, p in model.named_parameters()
    }
    return {"params": params, "modes": [m.training for m in model.modules()]}


def tiny_images(n=4, size=32, classes=2):
    x = torch.rand(n, 3, size, size)
    y = torch.arange(n) % classes
    return x, y


class ListDataset(TensorDataset):
    """A tensor dataset with the ``samples`` an ImageFolder has, so it can be cached."""

    def __init__(self, tmp_path, x, y):
        super().__init__(x, y)
        self.transform = None
        self.samples = []
        for i, label in enumerate(y.tolist()):
            path = tmp_path / f"{i}.bin"
            path.write_bytes(x[i].numpy().tobytes())
            self.samples.append((str(path), label))


def only_meta_errors(call):
    """Run ``call``; it may fail only because meta tensors hold no data."""
    with pytest.raises((RuntimeError, NotImplementedError)) as info:
        call()
    message = str(info.value)
    assert not MIXED_DEVICES.search(message), message
    assert "meta" in message.lower(), message


def test_extract_features_leaves_the_callers_backbone_as_it_was(pretrained, tmp_cache):
    body = tl.feature_extractor(pretrained)
    before = fingerprint(body)
    x, y = tiny_images()
    tl.extract_features(body, TensorDataset(x, y), cache=False, progress=False)
    assert fingerprint(body) == before  # was: moved to channels_last in place


def test_stage_features_leaves_the_model_as_it_was(pretrained, image_folder, tmp_cache):
    model = copy.deepcopy(pretrained).train()
    before = fingerprint(model)
    transform = tl.create_transform(tl.data_config(model), image_size=32)
    data = tl.load_image_folder(image_folder, transform, transform, seed=0)
    tl.stage_features(model, data.train, stages=[3, 8], progress=False)
    assert fingerprint(model) == before


def test_the_feature_cache_is_kept_apart_per_device(pretrained, tmp_path, tmp_cache):
    body = tl.feature_extractor(pretrained)
    data = ListDataset(tmp_path, *tiny_images())
    cpu, _ = tl.extract_features(body, data, device="cpu", progress=False)
    assert len(list((tmp_cache / "features").glob("*.pt"))) == 1
    again, _ = tl.extract_features(body, data, device="cpu", progress=False)
    assert torch.equal(cpu, again)  # the CPU's own cache is reused
    # On another device the CPU's features are not reused: the backbone runs there
    # (on meta it cannot produce numbers, which shows that it ran).
    only_meta_errors(
        lambda: tl.extract_features(body, data, device="meta", progress=False)
    )


def test_predict_runs_where_the_model_is():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).to("meta")
    loader = [(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]))]
    only_meta_errors(lambda: tl.predict(model, loader))  # was: inputs on the CPU
    only_meta_errors(lambda: tl.evaluate(model, loader))


def test_predict_moves_the_model_to_the_device_it_is_given():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    loader = [(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]))]
    only_meta_errors(lambda: tl.predict(model, loader, device="meta"))
    assert train.model_device(model).type == "meta"


def test_fit_on_meta_meets_no_tensor_on_another_device():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    loader = [(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]))]
    only_meta_errors(
        lambda: tl.fit(model, loader, loader, epochs=1, device="meta", progress=False)
    )


def test_a_weighted_loss_on_the_models_device_scores_in_evaluate():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).to("meta")
    weight = torch.tensor([1.0, 3.0], device="meta")

    def loss_fn(logits, targets):
        return nn.functional.cross_entropy(logits, targets, weight=weight)

    loader = [(torch.rand(2, 3, 4, 4), torch.tensor([0, 1]))]
    only_meta_errors(lambda: tl.evaluate(model, loader, loss_fn))


def test_replace_head_puts_the_new_head_where_the_body_is(pretrained):
    model = copy.deepcopy(pretrained).to("meta")
    tl.replace_head(model, 3)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    tl.replace_head(model, 4, head=nn.Linear(model.num_features, 4))
    assert {p.device.type for p in model.parameters()} == {"meta"}
    resnet = torchvision.models.resnet18(weights=None).to("meta")
    tl.replace_head(resnet, 3)
    assert resnet.fc.weight.device.type == "meta"


def test_export_model_leaves_the_callers_model_as_it_was(pretrained, tmp_path):
    model = copy.deepcopy(pretrained).train()
    tl.replace_head(model, 2)
    trained = checkpoint.trained_model(model, ["a", "b"], tl.DEFAULT_MODEL, 32)
    before = fingerprint(model)
    tl.export_model(trained, tmp_path / "m.pt2")
    assert fingerprint(model) == before  # was: switched to eval mode, moved to CPU


def test_step_seconds_times_a_copy(pretrained):
    model = copy.deepcopy(pretrained).eval()
    before = fingerprint(model)
    seconds = train.step_seconds(model, batch_size=2, image_size=32, device="cpu")
    assert seconds > 0
    assert fingerprint(model) == before


def test_no_autocast_context_where_precision_stays_float32():
    # torch.autocast("mps", enabled=False) raises on torch < 2.5: never build one there.
    for device in ("cpu", "mps", "meta"):
        context = train._autocast(torch.device(device), True)
        assert not isinstance(context, torch.autocast)
        assert train.amp_dtype(device) is None
    assert train._grad_scaler(torch.device("cpu"), True) is None


def test_feature_extraction_is_float32_unless_asked(monkeypatch):
    seen = []
    monkeypatch.setattr(features, "_autocast", lambda d, on: seen.append(on) or _null())
    body = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1))
    tl.extract_features(
        body, TensorDataset(*tiny_images()), cache=False, progress=False
    )
    assert seen and not any(seen)


def _null():
    import contextlib

    return contextlib.nullcontext()
