import errno
import socket
import urllib.error

import pytest
import torch
import torchvision
from PIL import Image
from skimage import data as skdata
from torch import nn

import tlutils as tl

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def top1(model, photo):
    transform = tl.create_transform(tl.data_config(model))
    image = Image.fromarray(getattr(skdata, photo)())
    with torch.no_grad():
        return tl.imagenet_classes()[
            model(transform(image).unsqueeze(0)).argmax().item()
        ]


def test_lite0_weights_load_strictly_with_timm_names():
    state = tl.lite0_state_dict()
    model = tl.create_model(pretrained=False)
    assert set(state) == set(model.state_dict())
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize(
    ("photo", "expected"),
    [("chelsea", CAT_CLASSES), ("coffee", {"espresso"}), ("rocket", {"missile"})],
)
def test_pretrained_top1_on_sample_photos(pretrained, photo, expected):
    assert top1(pretrained, photo) in expected


def test_random_weights_do_not_know_the_photos():
    model = tl.create_model(pretrained=False).eval()
    assert [top1(model, p) for p in ("chelsea", "coffee", "rocket")] != [
        "Egyptian cat",
        "espresso",
        "missile",
    ]


def test_data_config_of_lite0(pretrained):
    cfg = tl.data_config(pretrained)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)
    assert (
        cfg["input_size"] == (3, 224, 224)
        and cfg["interpolation"] == "bicubic"
        and cfg["crop_pct"] == 0.875
    )


def test_imagenet_classes():
    classes = tl.imagenet_classes()
    assert len(classes) == 1000 and classes[309] == "bee" and classes[310] == "ant"


def test_create_model_with_num_classes_keeps_body_weights():
    model = tl.create_model(num_classes=5)
    reference = tl.lite0_state_dict()
    assert torch.equal(model.conv_stem.weight, reference["conv_stem.weight"])
    assert model(torch.randn(2, 3, 96, 96)).shape == (2, 5)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown model 'resnet9000'"):
        tl.create_model("resnet9000")


def _raises(error):
    def build():
        raise error

    return build


def _wrapped_url_error():
    try:
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    except urllib.error.URLError as cause:
        try:
            raise RuntimeError("could not fetch the checkpoint") from cause
        except RuntimeError as err:
            return err


def _raised_while_handling(network_error):
    try:
        raise network_error
    except OSError:
        try:
            raise ValueError("no checkpoint")  # no `from`: only __context__ is set
        except ValueError as err:
            return err


def _hub_offline_error():
    # What timm's hf_hub_download raises offline: LocalEntryNotFoundError from the
    # HTTP client's connect error, itself from socket.gaierror.
    errors = pytest.importorskip("huggingface_hub.errors")
    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as cause:
            raise errors.LocalEntryNotFoundError("cannot find the file") from cause
    except errors.LocalEntryNotFoundError as err:
        return err


def _requests_connection_error():
    requests = pytest.importorskip("requests")
    return requests.exceptions.ConnectionError("Max retries exceeded")


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError("[Errno -2] Name or service not known"),
        urllib.error.HTTPError(
            "https://example.org/w.pth", 503, "unavailable", None, None
        ),
        ConnectionError("connection refused"),
        socket.gaierror(-2, "Name or service not known"),
        TimeoutError("timed out"),  # socket.timeout is TimeoutError
        _wrapped_url_error(),
        _raised_while_handling(socket.gaierror(-3, "Temporary failure")),
    ],
    ids=[
        "URLError",
        "HTTPError",
        "ConnectionError",
        "gaierror",
        "timeout",
        "wrapped",
        "context",
    ],
)
def test_failed_downloads_name_the_offline_default(error):
    with pytest.raises(RuntimeError, match="seems to be offline") as raised:
        tl.models._download_guard("resnet18", _raises(error))
    assert "efficientnet_lite0" in str(raised.value) and "pretrained=False" in str(
        raised.value
    )


@pytest.mark.parametrize(
    "make_error",
    [_hub_offline_error, _requests_connection_error],
    ids=["HF Hub", "requests"],
)
def test_library_download_errors_name_the_offline_default(make_error):
    with pytest.raises(RuntimeError, match="seems to be offline"):
        tl.models._download_guard("resnet18.a1_in1k", _raises(make_error()))


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        PermissionError(errno.EACCES, "Permission denied"),
        RuntimeError("size mismatch for fc.weight"),
        FileNotFoundError(errno.ENOENT, "No such file: http_weights.pth"),
        RuntimeError("invalid load key, '<' (downloaded an HTML page?)"),
    ],
    ids=["disk full", "permission", "bug", "missing file", "corrupt file"],
)
def test_other_errors_pass_through_unchanged(error):
    with pytest.raises(type(error)) as raised:
        tl.models._download_guard("resnet18", _raises(error))
    assert raised.value is error


def _online() -> bool:
    try:
        socket.create_connection(("download.pytorch.org", 443), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(
    _online(), reason="the network is reachable: the download would succeed"
)
def test_create_model_offline_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    with pytest.raises(RuntimeError, match="seems to be offline"):
        tl.create_model("resnet18", pretrained=True)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_large", "efficientnet_b0"])
def test_torchvision_models_get_their_weights_own_preprocessing(name):
    preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    cfg = tl.data_config(tl.create_model(name, pretrained=False))
    assert cfg["input_size"] == (3, *preset.crop_size * 2)[:3]
    assert cfg["mean"] == tuple(preset.mean) and cfg["std"] == tuple(preset.std)
    assert cfg["interpolation"] == preset.interpolation.value
    resize, crop = tl.create_transform(cfg).transforms[:2]
    assert (
        resize.size == preset.resize_size[0] and crop.size == (preset.crop_size[0],) * 2
    )
    assert resize.interpolation == preset.interpolation


@pytest.mark.parametrize(
    "name", torchvision.models.list_models(module=torchvision.models)
)
def test_every_torchvision_resize_is_exact(name):
    # create_transform resizes to int(crop / crop_pct): rounding must not lose a pixel.
    weights = torchvision.models.get_model_weights(name).DEFAULT
    preset = weights.transforms()
    cfg = tl.models.torchvision_config(name)
    resize, crop = tl.create_transform(cfg).transforms[:2]
    assert (
        resize.size == preset.resize_size[0] and crop.size == (preset.crop_size[0],) * 2
    )
    assert cfg["weights"] == str(weights) and cfg["architecture"] == name
    assert cfg["num_classes"] == len(weights.meta["categories"])


class _WeightsWithoutPreset:
    class DEFAULT:
        transforms = None
        meta = {"categories": ["a", "b"]}


def test_weights_without_a_preset_fall_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(
        torchvision.models, "get_model_weights", lambda name: _WeightsWithoutPreset
    )
    with pytest.warns(UserWarning, match="classic ImageNet"):
        cfg = tl.models.torchvision_config("resnet18")
    assert {
        k: cfg[k] for k in tl.models.IMAGENET_FALLBACK
    } == tl.models.IMAGENET_FALLBACK
    assert tl.create_transform(cfg).transforms[0].size == 256
    assert cfg["num_classes"] == 2


def test_preprocessing_differs_where_the_weights_say_so():
    resnet50 = tl.create_transform(
        tl.data_config(tl.create_model("resnet50", pretrained=False))
    )
    b0 = tl.create_transform(
        tl.data_config(tl.create_model("efficientnet_b0", pretrained=False))
    )
    assert resnet50.transforms[0].size == 232 and b0.transforms[0].size == 256
    assert b0.transforms[0].interpolation.value == "bicubic"


@pytest.mark.parametrize(
    ("name", "top1"),
    [
        ("vgg16", 71.592),
        ("resnet18", 69.758),
        ("resnet50", 80.858),  # IMAGENET1K_V2, what weights="DEFAULT" loads
        ("densenet121", 74.434),
        ("efficientnet_b0", 77.692),
        ("efficientnet_lite0", 75.1),  # tensorflow/tpu, efficientnet/lite/README.md
    ],
)
def test_published_top1_comes_from_the_sources(name, top1):
    assert tl.models.published_top1(name) == pytest.approx(top1)


def test_resnet50_default_weights_are_v2():
    weights = torchvision.models.ResNet50_Weights
    assert weights.DEFAULT is weights.IMAGENET1K_V2


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("resnet18", lambda m: m.fc),
        ("vgg16", lambda m: m.classifier[6]),
        ("densenet121", lambda m: m.classifier),
        ("mobilenet_v3_small", lambda m: m.classifier[-1]),
        ("efficientnet_b0", lambda m: m.classifier[-1]),
    ],
)
def test_replace_head_of_torchvision_models(name, where):
    model = tl.create_model(name, pretrained=False)
    body_before = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if not k.startswith(("fc", "classifier"))
    }
    tl.replace_head(model, 7)
    assert isinstance(where(model), nn.Linear) and where(model).out_features == 7
    assert tl.get_head(model) is where(model)
    body_after = model.state_dict()
    assert all(torch.equal(v, body_after[k]) for k, v in body_before.items())
    if name != "vgg16":  # VGG16 at 224 px is slow; the head check above is enough
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("resnet18", lambda m: (m, "fc")),
        ("densenet121", lambda m: (m, "classifier")),
        ("vgg16", lambda m: (m.classifier, 6)),
        ("efficientnet_b0", lambda m: (m.classifier, 1)),
        ("vit_b_16", lambda m: (m.heads, 0)),
        ("swin_t", lambda m: (m, "head")),
    ],
)
def test_head_location_is_public(name, where):
    model = torchvision.models.get_model(name, weights=None)
    parent, attr = tl.models.head_location(model)
    assert parent is where(model)[0] and attr == where(model)[1]
    assert "head_location" in tl.models.__all__
    assert not hasattr(tl.models, "_head_location")  # one locator, no private twin


def test_head_location_without_a_linear_head_is_a_clear_error():
    model = torchvision.models.get_model("squeezenet1_1", weights=None)
    with pytest.raises(TypeError, match="Replace it by hand"):
        tl.models.head_location(model)


def test_replace_head_of_timm_model_with_custom_head(pretrained):
    import copy

    model = copy.deepcopy(pretrained)
    head = nn.Sequential(nn.Linear(1280, 32), nn.ReLU(), nn.Linear(32, 3))
    tl.replace_head(model, 3, head=head)
    assert tl.get_head(model) is head
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    assert torch.equal(
        model.blocks[0][0].conv_dw.weight, pretrained.blocks[0][0].conv_dw.weight
    )


def test_replace_head_rejects_bad_class_count():
    with pytest.raises(ValueError, match="positive integer"):
        tl.replace_head(tl.create_model(pretrained=False), 0)


def test_freeze_leaves_only_head_trainable():
    model = tl.create_model(num_classes=4)
    tl.freeze(model)
    assert tl.count_parameters(model)[0] == 0
    tl.unfreeze(model, tl.get_head(model))
    trainable, total = tl.count_parameters(model)
    assert trainable == 1280 * 4 + 4 and total > 3_000_000
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "classifier.weight",
        "classifier.bias",
    }


def test_freeze_by_name_prefix_and_bad_prefix():
    model = tl.create_model(pretrained=False)
    tl.freeze(model, ["conv_stem", "blocks.0"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("conv_stem", "blocks.0.")) for n in frozen)
    assert "blocks.1.0.conv_dw.weight" not in frozen
    with pytest.raises(
        ValueError, match="No parameter of the model starts with 'block'"
    ):
        tl.freeze(model, "block")


def test_set_batchnorm_eval_switches_only_frozen_layers():
    model = tl.create_model(pretrained=False)
    tl.freeze(model, "blocks")
    model.train()
    switched = tl.set_batchnorm_eval(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert switched == sum(
        1 for m in model.blocks.modules() if isinstance(m, nn.BatchNorm2d)
    )
    assert model.bn1.training and not model.blocks[0][0].bn1.training
    assert tl.set_batchnorm_eval(model, only_frozen=False) == len(bns)
    assert not model.bn1.training
