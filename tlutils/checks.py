"""Self-checks for the hands-on exercises: they look at your model or answer and say what is right or wrong.

Every check returns a :class:`CheckResult`; it never raises for a wrong answer, so an
unfinished exercise does not stop the notebook. Print it (or leave it last in a cell) to read
the verdict; ``bool(result)`` tells whether everything was right.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torchvision import transforms

from .models import data_config, get_head, lite0_state_dict

__all__ = [
    "CheckResult",
    "check_preprocessing",
    "check_new_head",
    "check_frozen_body",
    "check_case",
    "check_discriminative_lrs",
    "check_frozen_batchnorm",
    "check_strategy",
    "check_fine_tune_setup",
    "check_ranking",
]


@dataclass
class CheckResult:
    """The verdict of a self-check: ``ok`` and one verdict per thing checked (all chapters)."""

    title: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        """One line per verdict, wrapped to 76 characters so that it reads in the book's narrow column."""
        lines = [f"{self.title}: {'all right' if self.ok else 'not yet'}"]
        for mark, texts in [("  [ok]    ", self.passed), ("  [wrong] ", self.failed)]:
            lines += [
                textwrap.fill(
                    t, 76, initial_indent=mark, subsequent_indent=" " * len(mark)
                )
                for t in texts
            ]
        return "\n".join(lines)

    __repr__ = __str__

    def check(self, condition: bool, right: str, wrong: str) -> bool:
        (self.passed if condition else self.failed).append(
            right if condition else wrong
        )
        return condition


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(
        abs(float(x) - float(y)) < 1e-3 for x, y in zip(a, b, strict=True)
    )


def check_preprocessing(transform: transforms.Compose, model: nn.Module) -> CheckResult:
    """Does ``transform`` prepare images the way ``model`` was pretrained (chapter 1)?"""
    result = CheckResult("Preprocessing")
    expected = data_config(model)
    steps = list(getattr(transform, "transforms", [transform]))
    normalize = [t for t in steps if isinstance(t, transforms.Normalize)]
    if result.check(
        bool(normalize),
        "it normalises the pixels",
        "there is no transforms.Normalize step",
    ):
        mean, std = tuple(normalize[0].mean), tuple(normalize[0].std)
        result.check(
            _close(mean, expected["mean"]) and _close(std, expected["std"]),
            f"mean {tuple(expected['mean'])} and std {tuple(expected['std'])} match the model's pretraining",
            f"Normalize uses mean {mean} and std {std}, but this model was pretrained with mean "
            f"{tuple(expected['mean'])} and std {tuple(expected['std'])}",
        )
    tensor_index = next(
        (i for i, t in enumerate(steps) if isinstance(t, transforms.ToTensor)), None
    )
    norm_index = steps.index(normalize[0]) if normalize else None
    result.check(
        tensor_index is not None and (norm_index is None or tensor_index < norm_index),
        "ToTensor comes before Normalize",
        "ToTensor must come before Normalize (Normalize works on tensors with pixels in [0, 1])",
    )
    sizes = [
        t.size
        for t in steps
        if isinstance(t, (transforms.CenterCrop, transforms.RandomResizedCrop))
    ]
    if sizes:
        size = sizes[-1][0] if isinstance(sizes[-1], (tuple, list)) else sizes[-1]
        want = expected["input_size"][-1]
        result.check(
            size >= want // 2,
            f"the crop ({size} px) is a sensible size for a model pretrained at {want} px",
            f"the crop is only {size} px; this model was pretrained at {want} px, so small objects vanish",
        )
    return result


def check_new_head(model: nn.Module, num_classes: int) -> CheckResult:
    """Has the ImageNet head been replaced by a new one with ``num_classes`` outputs (chapter 2)?"""
    result = CheckResult("New head")
    try:
        head = get_head(model)
    except TypeError as err:
        result.failed.append(str(err))
        return result
    out = getattr(head, "out_features", None)
    if out is None:  # a custom head: find its last linear layer
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        out = linears[-1].out_features if linears else None
    result.check(
        out == num_classes,
        f"the head has {num_classes} outputs, one per class",
        f"the head has {out} outputs, your dataset has {num_classes} classes"
        + (
            " (that is still the ImageNet head: replace it with tl.replace_head)"
            if out == 1000
            else ""
        ),
    )
    params = list(head.parameters())
    result.check(
        bool(params) and all(p.requires_grad for p in params),
        "the head's parameters are trainable",
        "the head is frozen: nothing would learn (unfreeze it, or replace it after freezing the body)",
    )
    with torch.no_grad():
        was_training = model.training
        logits = model.eval()(
            torch.randn(1, 3, 64, 64, device=next(model.parameters()).device)
        )
        model.train(was_training)
    result.check(
        tuple(logits.shape) == (1, num_classes),
        f"a forward pass gives {num_classes} logits per image",
        f"a forward pass gives an output of shape {tuple(logits.shape)}, expected (1, {num_classes})",
    )
    return result


def check_frozen_body(model: nn.Module) -> CheckResult:
    """Is everything frozen except the head, as in feature extraction (chapter 2)?"""
    result = CheckResult("Frozen body, trainable head")
    head_ids = {id(p) for p in get_head(model).parameters()}
    body_trainable = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and id(p) not in head_ids
    ]
    result.check(
        not body_trainable,
        "no parameter of the body is trainable",
        f"{len(body_trainable)} body parameter tensors are still trainable, e.g. {body_trainable[:3]}",
    )
    head_params = list(get_head(model).parameters())
    result.check(
        bool(head_params) and all(p.requires_grad for p in head_params),
        "the head is trainable",
        "the head is frozen too: nothing would learn",
    )
    return result


def check_case(case: int, images_per_class: int, similar: bool) -> CheckResult:
    """Is ``case`` (1-4) the case of the four-case rule for this dataset (chapter 3)?"""
    from .rule import recommend_case

    result = CheckResult("Four-case rule")
    expected = recommend_case(images_per_class, similar)
    result.check(
        case == expected.case,
        f"case {case}: {expected.size} and {expected.similarity}, so {expected.strategy}",
        f"you said case {case}, but {images_per_class} images per class is {expected.size} and the data is "
        f"{expected.similarity}: case {expected.case} ({expected.strategy})",
    )
    return result


def check_discriminative_lrs(
    optimizer: torch.optim.Optimizer, model: nn.Module
) -> CheckResult:
    """Are all trainable parameters in the optimizer, with learning rates that grow towards the head (chapter 4)?"""
    result = CheckResult("Discriminative learning rates")
    lr_of = {
        id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]
    }
    order = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in order if id(p) not in lr_of]
    result.check(
        not missing,
        "every trainable parameter is in the optimizer",
        f"{len(missing)} trainable parameter tensors are in no parameter group, e.g. {missing[:3]}",
    )
    lrs = [lr_of[id(p)] for _, p in order if id(p) in lr_of]
    result.check(
        len(set(lrs)) > 1,
        f"there are {len(set(lrs))} different learning rates",
        "every parameter has the same learning rate: that is not discriminative",
    )
    drops = [
        (order[i][0], lrs[i], lrs[i + 1])
        for i in range(len(lrs) - 1)
        if lrs[i + 1] < lrs[i] - 1e-12
    ]
    result.check(
        not drops,
        "learning rates never decrease from the input towards the head",
        f"the learning rate decreases from {drops[0][1]:g} to {drops[0][2]:g} after {drops[0][0]}: "
        "earlier layers should get smaller rates than later ones"
        if drops
        else "",
    )
    head_ids = {id(p) for p in get_head(model).parameters()}
    head_lr = max((lr_of[i] for i in head_ids if i in lr_of), default=None)
    result.check(
        head_lr is not None and head_lr == max(lrs, default=0),
        "the head has the largest learning rate",
        "the head has no learning rate"
        if head_lr is None
        else f"the head's rate {head_lr:g} is not the largest",
    )
    return result


def check_frozen_batchnorm(model: nn.Module) -> CheckResult:
    """Are the BatchNorm layers of frozen parts in eval mode, so their statistics stay put (chapter 2)?"""
    result = CheckResult("BatchNorm of the frozen body")
    bns = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    frozen = [
        (n, m) for n, m in bns if all(not p.requires_grad for p in m.parameters())
    ]
    if not result.check(
        bool(frozen),
        f"{len(frozen)} BatchNorm layers are frozen",
        "no BatchNorm layer is frozen",
    ):
        return result
    moving = [n for n, m in frozen if m.training]
    result.check(
        not moving,
        "every frozen BatchNorm layer is in eval mode: its running statistics will not change",
        f"{len(moving)} frozen BatchNorm layers are in train mode (e.g. {moving[:2]}): every forward pass "
        "in training would overwrite their ImageNet statistics; call .eval() on them after model.train()",
    )
    return result


def check_strategy(model: nn.Module, strategy: str) -> CheckResult:
    """Is an EfficientNet-Lite0 set up for ``strategy``: "linear_probe", "fine_tune" or "scratch" (chapter 3)?"""
    result = CheckResult(f"Strategy {strategy!r}")
    if strategy not in ("linear_probe", "fine_tune", "scratch"):
        raise ValueError(
            f"strategy must be 'linear_probe', 'fine_tune' or 'scratch', got {strategy!r}."
        )
    stem = getattr(model, "conv_stem", None)
    if stem is None:
        result.failed.append(
            "this is not an EfficientNet-Lite0 (no conv_stem): create it with tl.create_model()"
        )
        return result
    pretrained = torch.equal(
        stem.weight.detach().cpu(), lite0_state_dict()["conv_stem.weight"]
    )
    want_pretrained = strategy != "scratch"
    result.check(
        pretrained == want_pretrained,
        "the body starts from the ImageNet weights"
        if want_pretrained
        else "the body starts from random weights",
        "the body has random weights, but this strategy reuses the pretrained ones (pretrained=True)"
        if want_pretrained
        else "the body has the ImageNet weights, but training from scratch starts from random ones (pretrained=False)",
    )
    head_ids = {id(p) for p in get_head(model).parameters()}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    trainable_body = sum(p.requires_grad for p in body)
    if strategy == "linear_probe":
        result.check(
            trainable_body == 0,
            "the body is frozen",
            f"{trainable_body} body parameter tensors are trainable; a linear probe trains only the head",
        )
    else:
        result.check(
            trainable_body == len(body),
            "every body parameter is trainable",
            f"{len(body) - trainable_body} body parameter tensors are frozen; {strategy} trains the whole network",
        )
    result.check(
        all(p.requires_grad for p in get_head(model).parameters()),
        "the head is trainable",
        "the head is frozen: nothing would learn",
    )
    return result


def check_fine_tune_setup(
    model: nn.Module, optimizer: torch.optim.Optimizer, warm_up_lr: float
) -> CheckResult:
    """Phase 2 of the recipe: is part of the body unfrozen, in the optimizer, at a rate well below ``warm_up_lr`` (chapter 4)?"""
    result = CheckResult("Fine-tuning setup (phase 2)")
    head_ids = {id(p) for p in get_head(model).parameters()}
    lr_of = {
        id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]
    }
    body = [(n, p) for n, p in model.named_parameters() if id(p) not in head_ids]
    unfrozen = [(n, p) for n, p in body if p.requires_grad]
    if not result.check(
        bool(unfrozen),
        f"{len(unfrozen)} body parameter tensors are unfrozen",
        "the body is still frozen: unfreeze it (or its top stages) with tl.unfreeze",
    ):
        return result
    missing = [n for n, p in unfrozen if id(p) not in lr_of]
    result.check(
        not missing,
        "every unfrozen body parameter is in the optimizer",
        f"{len(missing)} unfrozen body parameter tensors are not in the optimizer (e.g. {missing[:2]}): "
        "create the optimizer after unfreezing",
    )
    body_lrs = [lr_of[id(p)] for _, p in unfrozen if id(p) in lr_of]
    if body_lrs:
        result.check(
            max(body_lrs) <= warm_up_lr / 10 + 1e-12,
            f"the body learns at most at {max(body_lrs):g}, at least 10 times below the warm-up's {warm_up_lr:g}",
            f"the body learns at {max(body_lrs):g}; keep it at least 10 times below the warm-up's {warm_up_lr:g} "
            "so the pretrained filters move only a little",
        )
    return result


def _ranking_runs(scores: object) -> object:
    """One method's scores for :func:`tlutils.verdict.compare`: a flat sequence of numbers
    is one accuracy per seed (``[runs, 1]``); anything 2-D is per-image correctness per
    seed (``[runs, images]``, or one deterministic run as ``[[...]]``)."""
    import numpy as np

    if isinstance(scores, np.ndarray):
        return scores[:, None] if scores.ndim == 1 else scores
    items = list(scores)  # type: ignore[call-overload]
    if items and all(np.ndim(x) == 0 for x in items):
        return np.asarray(items, dtype=float)[:, None]
    return items


def check_ranking(
    predicted: Sequence[str],
    scores: dict[str, object],
    what: str = "accuracy",
) -> CheckResult:
    """Does a predicted order (best first) agree with the course's verdict rule (chapter 4)?

    ``scores`` maps each method to its runs, the seeds in the same order for every method:
    per-image correctness ``[runs, images]`` (the same validation images, in the same
    order, for every method), or one accuracy per seed (a flat list, compared as
    ``[runs, 1]``). Every pair is judged by :func:`tlutils.verdict.compare`: the predicted
    order is wrong only where the rule calls the lower-ranked method better; where it says
    "equivalent" either order is right, and where it says "inconclusive" the data cannot
    tell, which the check says too.
    """
    from .verdict import compare

    result = CheckResult(f"Your ranking by {what}")
    names = list(predicted)
    if sorted(names) != sorted(scores) or len(set(names)) != len(names):
        result.check(
            False,
            "",
            f"rank each of {', '.join(scores)} exactly once (best first); you gave "
            f"{names}",
        )
        return result
    for i, better in enumerate(names):
        for worse in names[i + 1 :]:
            try:
                v = compare(_ranking_runs(scores[better]), _ranking_runs(scores[worse]))
            except ValueError as err:
                result.check(False, "", f"{better} against {worse}: {err}")
                continue
            said = v.sentence(better, worse)
            if v.verdict == "A better":
                result.check(True, f"{better} above {worse}: right, {said}", "")
            elif v.verdict == "B better":
                result.check(False, "", f"{better} above {worse}? no: {said}")
            elif v.verdict == "equivalent":
                result.check(True, f"{better} above {worse}: either order, {said}", "")
            else:
                result.passed.append(
                    f"{better} above {worse}: the data cannot tell, {said}"
                )
    return result
