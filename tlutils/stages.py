"""One numbering of a network's stages, from input to output (chapters 2-4).

Every chapter cuts, probes or unfreezes EfficientNet-Lite0 by *stage*, and every chapter
uses this one numbering, which is timm's own (``feature_info[i]["stage"]`` and
``forward_intermediates(..., extra_blocks=True)`` count the same way):

=====  ======================  ========================================
stage  timm modules            what it is
=====  ======================  ========================================
0      ``conv_stem``, ``bn1``  the stem: one 3x3 convolution
1-7    ``blocks.0``-``blocks.6``  the seven stages of MBConv blocks
8      ``conv_head``, ``bn2``  the final 1x1 convolution (1280 features)
=====  ======================  ========================================

The classifier (``classifier``) is the *head*, not a stage. :func:`stage_table` prints the
table with channels and map sizes. Other models are numbered by their top-level children
(``conv1``, ``bn1``, ``layer1``, ... for a ResNet), the head left out.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .models import freeze, get_head

__all__ = [
    "NUM_STAGES",
    "STAGE_NAMES",
    "stage_modules",
    "head_modules",
    "stage_channels",
    "stage_table",
    "stage_outputs",
    "body_to_stage",
    "StageFeatures",
    "CutModel",
    "split_at_stage",
]

STAGE_NAMES = ("stem", *(f"stage {i}" for i in range(1, 8)), "head conv")
"""Names of EfficientNet-Lite0's stages 0-8, for tables and plots."""

NUM_STAGES = len(STAGE_NAMES)


def _is_efficientnet(model: nn.Module) -> bool:
    needed = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")
    return all(hasattr(model, name) for name in needed)


def _check_lite0(model: nn.Module) -> None:
    if not _is_efficientnet(model) or len(model.blocks) != NUM_STAGES - 2:
        raise TypeError(
            "Stage numbers 0-8 need an EfficientNet-Lite0 from tlutils.create_model() "
            "(timm layout: conv_stem, bn1, 7 block stages, conv_head, bn2); got "
            f"{type(model).__name__}."
        )


def _check_stage(stage: int) -> int:
    if (
        isinstance(stage, bool)
        or not isinstance(stage, int)
        or not 0 <= stage < NUM_STAGES
    ):
        names = ", ".join(f"{i}={n}" for i, n in enumerate(STAGE_NAMES))
        raise ValueError(f"A stage is an integer from 0 to 8 ({names}); got {stage!r}.")
    return stage


def head_modules(model: nn.Module) -> list[str]:
    """Names of the modules that form the classifier head (chapter 4)."""
    head = get_head(model)
    names = [n for n, m in model.named_modules() if m is head and n]
    if not names:
        raise TypeError(
            f"Could not find the head of {type(model).__name__} among its modules."
        )
    return names[:1]


def stage_modules(model: nn.Module) -> list[list[str]]:
    """The module names of every stage, indexed by stage number (chapters 2-4).

    For timm EfficientNets: ``[["conv_stem", "bn1"], ["blocks.0"], ..., ["conv_head",
    "bn2"]]``. For other models every top-level child except the head is a stage. A stage
    whose modules were replaced by ``nn.Identity`` (see :func:`split_at_stage`) keeps its
    number and simply has no parameters.
    """
    if _is_efficientnet(model):
        blocks = [[f"blocks.{i}"] for i in range(len(model.blocks))]
        return [["conv_stem", "bn1"], *blocks, ["conv_head", "bn2"]]
    head = head_modules(model)[0]
    parent = head.split(".")[0]
    numbered = [[name] for name, _ in model.named_children() if name != parent]
    if (
        parent != head
    ):  # the head sits in a block, e.g. VGG's classifier.6: the rest is a stage
        block = dict(model.named_children())[parent]
        rest = [
            f"{parent}.{n}"
            for n, m in block.named_children()
            if f"{parent}.{n}" != head
        ]
        numbered.append(
            [n for n in rest if any(True for _ in model.get_submodule(n).parameters())]
        )
    return [mods for mods in numbered if mods]


def stage_channels(model: nn.Module) -> list[int]:
    """Output channels of stages 0-8 of EfficientNet-Lite0 (= its pooled feature sizes) (chapter 2)."""
    _check_lite0(model)
    info = {f["stage"]: f["num_chs"] for f in model.feature_info}
    last = [b[-1] for b in model.blocks]  # the last block of each stage sets its width
    widths = [
        (blk.bn3 if hasattr(blk, "bn3") else blk.bn2).num_features for blk in last
    ]
    channels = [model.bn1.num_features, *widths, model.bn2.num_features]
    assert all(channels[s] == c for s, c in info.items()), (
        "disagrees with timm's feature_info"
    )
    return channels


@torch.no_grad()
def stage_outputs(
    model: nn.Module, images: torch.Tensor, stages: Sequence[int] | Sequence[str]
) -> list[torch.Tensor]:
    """The feature maps of the given stages for a batch of ``images`` (chapter 2).

    ``stages`` are stage numbers 0-8 of an EfficientNet-Lite0 (timm's
    ``forward_intermediates``; stage 8 is ``forward_features``), or module names such as
    ``"layer1"`` for any other model (torchvision's ``create_feature_extractor``). The
    model is put in eval mode; its weights are shared, not copied.
    """
    if images.ndim != 4:
        raise ValueError(
            f"images must be a batch (N, C, H, W), got {tuple(images.shape)}."
        )
    if len(stages) == 0:
        raise ValueError("Name at least one stage.")
    model.eval()
    if all(isinstance(s, int) and not isinstance(s, bool) for s in stages):
        _check_lite0(model)
        for s in stages:
            _check_stage(s)
        maps = _stage_maps(model, images, sorted(set(stages)))
        return [maps[s] for s in stages]
    if all(isinstance(s, str) for s in stages):
        from torchvision.models.feature_extraction import create_feature_extractor

        names = {name for name, _ in model.named_modules()}
        missing = [s for s in stages if s not in names]
        if missing:
            raise ValueError(
                f"The model has no modules named {missing}; see print(model)."
            )
        extractor = create_feature_extractor(model, return_nodes={s: s for s in stages})
        out = extractor(images)
        return [out[s] for s in stages]
    raise TypeError("stages must be all stage numbers (0-8) or all module names.")


def _stage_maps(model: nn.Module, images: torch.Tensor, stages: list[int]) -> dict:
    """Stage number -> feature map, in one forward pass that stops after the last stage."""
    last = NUM_STAGES - 1
    inner = [s for s in stages if s < last]
    if last not in stages:
        maps = model.forward_intermediates(
            images,
            indices=inner,
            intermediates_only=True,
            stop_early=True,
            extra_blocks=True,
        )
        return dict(zip(inner, maps, strict=True))
    final, maps = model.forward_intermediates(
        images, indices=inner or [0], extra_blocks=True
    )
    return {**dict(zip(inner, maps, strict=False)), last: final}


def stage_table(model: nn.Module, image_size: int = 224):
    """The stage numbering as a table: stage, name, timm modules, channels, map size (chapter 2)."""
    import pandas as pd

    _check_lite0(model)
    x = torch.zeros(
        1, 3, image_size, image_size, device=next(model.parameters()).device
    )
    maps = stage_outputs(model, x, list(range(NUM_STAGES)))
    rows = [
        {
            "stage": s,
            "name": STAGE_NAMES[s],
            "timm modules": ", ".join(mods),
            "channels": m.shape[1],
            "map size": f"{m.shape[2]}x{m.shape[3]}",
        }
        for s, (mods, m) in enumerate(zip(stage_modules(model), maps, strict=True))
    ]
    return pd.DataFrame(rows).set_index("stage")


def body_to_stage(model: nn.Module, stage: int) -> nn.Sequential:
    """The layers of Lite0 from the input up to and including ``stage``, in order (chapter 3).

    The modules are shared with ``model``, not copied.
    """
    _check_lite0(model)
    _check_stage(stage)
    layers = [model.conv_stem, model.bn1, *list(model.blocks)[:stage]]
    if stage == NUM_STAGES - 1:
        layers += [model.conv_head, model.bn2]
    return nn.Sequential(*layers)


class StageFeatures(nn.Module):
    """A frozen Lite0 body that returns the pooled output of chosen stages, concatenated (chapter 3).

    One forward pass gives the features of every chosen stage, so
    :func:`tlutils.extract_features` can run it once and cache the result. The stages are
    stored as a buffer, so they are part of the cache key.
    """

    def __init__(self, model: nn.Module, stages: Sequence[int] | None = None) -> None:
        super().__init__()
        _check_lite0(model)
        chosen = (
            range(NUM_STAGES) if stages is None else [_check_stage(s) for s in stages]
        )
        chosen = tuple(chosen)
        if not chosen or len(set(chosen)) != len(chosen):
            raise ValueError(f"stages must be different stage numbers, got {stages!r}.")
        self.model = copy.deepcopy(model)
        self.model.classifier = nn.Identity()
        self.register_buffer("stages", torch.tensor(sorted(chosen)))
        freeze(self)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = stage_outputs(self.model, x, self.stages.tolist())
        return torch.cat([m.mean((2, 3)) for m in maps], dim=1)


class CutModel(nn.Module):
    """Lite0's body cut after ``stage``, pooled, then a linear head: the cut probe as one
    network (chapters 3 and 5), the one class that chapter 3's strategies, ``tlutils
    train`` and saved models use.

    ``body`` holds copies of the stem and blocks up to ``stage`` (``model`` is not
    changed), so it computes the same features as :class:`StageFeatures` for that stage;
    ``classifier`` maps their pooled values to the classes (``head``: a probe converted
    to a layer; by default a new one). Nothing is frozen here.
    """

    def __init__(
        self,
        model: nn.Module,
        stage: int,
        num_classes: int,
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        model = copy.deepcopy(model)
        self.cut_stage = int(stage)
        self.body = body_to_stage(model, self.cut_stage)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        width = stage_channels(model)[self.cut_stage]
        self.classifier = head if head is not None else nn.Linear(width, num_classes)
        self.pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.body(x)))


def split_at_stage(model: nn.Module, stage: int) -> tuple[nn.Module, nn.Module]:
    """Cut Lite0 after ``stage`` into a frozen ``bottom`` and a trainable ``top`` (chapter 4).

    ``bottom`` (stages 0 to ``stage``) shares the model's weights, is frozen and in eval
    mode: its outputs can be computed once and cached. ``top`` is a copy of the model whose
    stages up to ``stage`` are ``nn.Identity``, so ``top(bottom(x)) == model(x)`` in eval
    mode. Its parameters keep their names (``blocks.6.0.conv_pw.weight``) and stage
    numbers, so ``model.load_state_dict(top.state_dict(), strict=False)`` copies it back.
    """
    _check_lite0(model)
    if not 0 <= _check_stage(stage) < NUM_STAGES - 2:
        raise ValueError(f"Cut after a stage from 0 to {NUM_STAGES - 3}, got {stage}.")
    bottom = body_to_stage(model, stage)
    freeze(bottom)
    bottom.eval()
    top = copy.deepcopy(model)
    top.conv_stem, top.bn1 = nn.Identity(), nn.Identity()
    for i in range(stage):
        top.blocks[i] = nn.Identity()
    return bottom, top
