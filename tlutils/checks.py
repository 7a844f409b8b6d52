"""Self-checks for the hands-on exercises: they look at your answer and say what is
right or wrong (chapters 1-4).

Every check returns a :class:`CheckResult` and never raises: a wrong, unfinished or
malformed answer (``None``, swapped arguments, a list where an optimizer belongs, a
model without ``pretrained_cfg``) gets a ``[wrong]`` line that names what the check
received and what it expected, so an unfinished exercise does not stop the notebook.
Print the result to read it. Its lines are of three kinds:

* ``[ok]``: right;
* ``[wrong]``: what is wrong, as a hint;
* ``[?]``: what the check cannot judge from what it was given (the data cannot tell two
  methods apart, a fact it was not told). Then the first line says "cannot judge" or
  "right where it can judge", never "all right".

``bool(result)`` is true when nothing was wrong and something could be judged.

**Hints before answers.** A ``[wrong]`` line says *what* is wrong, never the expected
answer itself. The answer is printed only when you ask for it, after trying: call the
same check again with ``reveal=True``. The checks whose lines could give an answer away
take that argument (:func:`check_preprocessing`, :func:`check_new_head`,
:func:`check_case`), and a wrong result that holds an answer ends with a line that says
how to see it (:data:`REVEAL_HINT`).

The checks read the course's core modules only (models, stages, data, rule, verdict).
"""

from __future__ import annotations

import functools
import math
import numbers
import random
import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from .data import create_transform
from .models import create_model, data_config, get_head
from .rule import STRATEGIES, recommend_case
from .stages import stage_modules
from .verdict import compare

__all__ = [
    "CheckResult",
    "REVEAL_HINT",
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

REVEAL_HINT = "Stuck? The same call with reveal=True shows the answer."
"""The last line of a wrong result whose answer is hidden (all chapters)."""

_WIDTH = 76  # the book's narrow column
_MARKS = {"ok": "  [ok]    ", "?": "  [?]     ", "wrong": "  [wrong] "}


def _wrap(text: str, mark: str) -> str:
    """One verdict, wrapped to the book's column under its mark."""
    return textwrap.fill(
        text, _WIDTH, initial_indent=mark, subsequent_indent=" " * len(mark)
    )


@dataclass
class CheckResult:
    """The verdict of a self-check (all chapters): ``[ok]``, ``[wrong]`` and ``[?]``
    lines.

    ``answers`` hold the expected answer of a wrong try; they are printed only when
    ``revealed`` is true (the check was called with ``reveal=True``).
    """

    title: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    revealed: bool = False

    @property
    def ok(self) -> bool:
        """Nothing was wrong, and something could be judged (all chapters)."""
        return not self.failed and bool(self.passed)

    def __bool__(self) -> bool:
        return self.ok

    @property
    def status(self) -> str:
        """The first line's word: all right, not yet, cannot judge (all chapters)."""
        if self.failed:
            return "not yet"
        if not self.passed:
            return "cannot judge"
        return "right where it can judge" if self.unjudged else "all right"

    def __str__(self) -> str:
        """One line per verdict, wrapped to 76 characters for the book's column."""
        lines = [f"{self.title}: {self.status}"]
        for key, texts in [
            ("ok", self.passed),
            ("?", self.unjudged),
            ("wrong", self.failed),
        ]:
            lines += [_wrap(t, _MARKS[key]) for t in texts]
        if self.failed and self.answers:
            if self.revealed:
                lines += [_wrap(t, "  [answer] ") for t in self.answers]
            else:
                lines.append(_wrap(REVEAL_HINT, "  "))
        return "\n".join(lines)

    __repr__ = __str__

    def check(self, condition: bool, right: str, wrong: str) -> bool:
        """Add ``right`` to the passed, or ``wrong`` to the failed lines."""
        (self.passed if condition else self.failed).append(
            right if condition else wrong
        )
        return condition


# ----------------------------------------------------------------- what was received


def _short(text: object, limit: int = 160) -> str:
    """A message cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_model(value: object) -> bool:
    """A network (parameters or a ``pretrained_cfg``), not a transform."""
    return isinstance(value, nn.Module) and (
        bool(getattr(value, "pretrained_cfg", None))
        or next(value.parameters(), None) is not None
    )


def _model_name(model: nn.Module) -> str:
    """The architecture's name: ``pretrained_cfg["architecture"]`` or the class name."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture") if isinstance(cfg, Mapping) else None
    if name == "tf_efficientnet_lite0":
        return "EfficientNet-Lite0"
    return str(name) if name else type(model).__name__


def _a(name: str) -> str:
    """``"a ResNet"``, ``"an Adam"``."""
    return f"{'an' if name[:1] in tuple('AEIOUaeiou') else 'a'} {name}"


def _describe(value: object) -> str:
    """What a check received, in a few words (``None``, ``a list of 2 (dict)``, ...)."""
    if value is None or isinstance(value, (bool, numbers.Number, str)):
        return _short(repr(value), 40)
    if isinstance(value, torch.optim.Optimizer):
        return f"{_a(type(value).__name__)} optimizer"
    if _is_model(value):
        return f"{_a(_model_name(value))} model"
    if isinstance(value, (list, tuple, set, dict)):
        kinds = sorted({type(v).__name__ for v in value})
        return f"a {type(value).__name__} of {len(value)} ({', '.join(kinds)})"
    return _a(type(value).__name__)


def _safe_describe(value: object) -> str:
    """:func:`_describe`, or the bare type where even that fails."""
    try:
        return _describe(value)
    except Exception:
        return _a(type(value).__name__)


def _never_raises(title: str, call: str) -> Callable:
    """Turn an exception inside a check into a ``[wrong]`` line (the promise)."""

    def decorate(check: Callable) -> Callable:
        @functools.wraps(check)
        def safe(*args: Any, **kwargs: Any) -> CheckResult:
            try:
                return check(*args, **kwargs)
            except Exception as err:  # a wrong answer must never stop the notebook
                given = ", ".join(map(_safe_describe, [*args, *kwargs.values()]))
                result = CheckResult(title)
                result.failed.append(
                    f"the check could not judge what it received ({given}): "
                    f"{type(err).__name__}: {_short(err)}. It expects {call}."
                )
                return result

        return safe

    return decorate


def _need_model(
    result: CheckResult, model: object, call: str, others: Sequence[object] = ()
) -> bool:
    """Is ``model`` a network? If not, a ``[wrong]`` line (swapped arguments named)."""
    if _is_model(model):
        return True
    swapped = any(_is_model(o) for o in others)
    result.failed.append(
        f"expected a model (an nn.Module, e.g. from tl.create_model) where you passed "
        f"{_describe(model)}"
        + (f": the arguments look swapped, the call is {call}" if swapped else "")
    )
    return False


def _need_count(result: CheckResult, value: object, what: str) -> bool:
    """Is ``value`` a positive whole number? If not, a ``[wrong]`` line."""
    if (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value > 0
    ):
        return True
    result.failed.append(
        f"{what} should be a whole number of classes, got {_describe(value)}"
    )
    return False


def _config(model: nn.Module) -> dict[str, Any] | None:
    """The model's preprocessing configuration, or None where it has none."""
    try:
        return data_config(model)
    except Exception:  # no pretrained_cfg, or one timm cannot read
        return None


def _input_size(model: nn.Module) -> int:
    """The side of the images the model was pretrained on (224 where unknown)."""
    cfg = _config(model)
    try:
        return int(cfg["input_size"][-1]) if cfg else 224
    except (KeyError, TypeError, ValueError, IndexError):
        return 224


# ----------------------------------------------------------------- heads and passes


@functools.cache
def _torchvision_head_path(architecture: str) -> str | None:
    """Where a torchvision architecture keeps its ImageNet head (built on the meta
    device, so without memory or time)."""
    if architecture not in torchvision.models.list_models(module=torchvision.models):
        return None
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            fresh = torchvision.models.get_model(architecture, weights=None)
        head = get_head(fresh)
    except Exception:  # an architecture that does not build, or has no linear head
        return None
    return next((n for n, m in fresh.named_modules() if m is head), None)


def _head(model: nn.Module) -> tuple[str, nn.Module]:
    """The head's name and module: all of what sits where the ImageNet head sat, so an
    MLP head counts as head, not body. ``TypeError`` where there is no linear layer."""
    head: nn.Module | None = None
    if hasattr(model, "get_classifier"):  # timm
        head = model.get_classifier()
    else:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        arch = cfg.get("architecture") if isinstance(cfg, Mapping) else None
        path = _torchvision_head_path(arch) if isinstance(arch, str) else None
        if path:
            try:
                head = model.get_submodule(path)
            except AttributeError:  # the learner rebuilt the block around it
                head = None
        if head is None:
            head = _head_by_search(model)
    name = next((n for n, m in model.named_modules() if m is head), "")
    return name or "the head", head


def _head_by_search(model: nn.Module) -> nn.Module:
    """tlutils' head finder, then the last linear layer (an ``nn.Sequential`` probe)."""
    try:
        return get_head(model)
    except TypeError:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise TypeError(
                f"no linear layer in {type(model).__name__}: where is its head?"
            ) from None
        return linears[-1]


def _find_head(result: CheckResult, model: nn.Module) -> tuple[str, nn.Module] | None:
    """:func:`_head`, or a ``[wrong]`` line where the model has none."""
    try:
        name, head = _head(model)
    except Exception as err:
        result.failed.append(
            f"cannot find the head of {_describe(model)}: {_short(err)}"
        )
        return None
    if head is model:
        result.failed.append(
            f"{_describe(model)} is a head without a body: expected a network"
        )
        return None
    return name, head


def _linears(head: nn.Module) -> list[nn.Linear]:
    """The linear layers of a head, input first."""
    return [m for m in head.modules() if isinstance(m, nn.Linear)]


def _forward(
    model: nn.Module, size: int, head: nn.Module | None = None
) -> tuple[torch.Tensor | None, str, int | None]:
    """One random ``size`` px image through ``model`` in eval mode, every module's mode
    restored afterwards: ``(logits, error, number of features the head received)``."""
    fed: list[int] = []
    hook = (
        head.register_forward_pre_hook(lambda _, args: fed.append(args[0].shape[-1]))
        if head is not None
        else None
    )
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = model.eval()(image.to(device))
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out, "", (fed[0] if fed else None)
    except Exception as err:
        return None, f"{type(err).__name__}: {_short(err)}", (fed[0] if fed else None)
    finally:
        if hook is not None:
            hook.remove()
        for module, mode in modes.items():
            module.training = mode


def _judge_head_trainable(
    result: CheckResult, name: str, head: nn.Module, why: str = "nothing would learn"
) -> None:
    """Every parameter of the head trainable?"""
    params = list(head.named_parameters())
    frozen = [n for n, p in params if not p.requires_grad]
    if not params:
        result.failed.append(
            f"{name} has no parameters ({type(head).__name__}): nothing would learn"
        )
        return
    result.check(
        not frozen,
        f"the head ({name}) is trainable",
        f"the head is frozen: {why}"
        if len(frozen) == len(params)
        else f"part of the head is frozen ({', '.join(frozen[:3])}): all of it must "
        "learn",
    )


def _judge_head_input(
    result: CheckResult, head: nn.Module, fed: int | None, error: str, size: int
) -> str:
    """Explain a failed forward pass; returns the answer (the right ``in_features``)."""
    first = (_linears(head) or [None])[0]
    if fed is not None and first is not None and fed != first.in_features:
        result.failed.append(
            f"the head's first layer takes {first.in_features} features, but the body "
            "gives it another number, so a forward pass fails: read how many from the "
            "old head's in_features before you replace it (or let tl.replace_head "
            "read it for you)"
        )
        return f"the body gives {fed} features: a new nn.Linear({fed}, ...)"
    result.failed.append(f"a forward pass of one {size}x{size} image fails: {error}")
    return ""


# ----------------------------------------------------------------- chapter 1


_TO_TENSOR = {
    "ToTensor",
    "PILToTensor",
    "ToImage",
    "ToImageTensor",
    "MaybeToTensor",
    "MaybePILToTensor",
    "ImageClassification",
}
_AUGMENT = {
    "ColorJitter",
    "RandAugment",
    "AutoAugment",
    "TrivialAugmentWide",
    "AugMix",
    "GaussianBlur",
    "GaussianNoise",
    "ElasticTransform",
    "RandomErasing",
    "MixUp",
    "CutMix",
}
_PIL_MODES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box"}


def _names(step: object) -> set[str]:
    """The class names of a step and of its bases."""
    return {c.__name__ for c in type(step).__mro__}


def _steps(transform: object) -> list:
    """The steps of a (nested) ``Compose``, v1 or v2, or ``nn.Sequential``."""
    inner = getattr(transform, "transforms", None)
    if isinstance(transform, nn.Sequential):
        inner = list(transform)
    elif "Compose" not in _names(transform) or not isinstance(inner, (list, tuple)):
        return [transform]
    return [step for each in inner for step in _steps(each)]


def _is_random(step: object) -> bool:
    """Is the step a random augmentation (by its class or a base class)?"""
    return type(step).__name__.startswith("Random") or bool(_names(step) & _AUGMENT)


def _mode(value: object) -> str | None:
    """An interpolation as its name (``"bicubic"``), whatever form it was given in."""
    if isinstance(value, torchvision.transforms.InterpolationMode):
        return value.value
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, int):
        return _PIL_MODES.get(value)
    return None


def _one(size: object) -> object:
    """A size as one int where it is one (``256``, ``[256]``), else as a tuple."""
    if isinstance(size, int):
        return size
    size = tuple(size) if isinstance(size, (list, tuple)) else size
    return size[0] if isinstance(size, tuple) and len(size) == 1 else size


def _resize_of(step: object) -> tuple[object, str | None] | None:
    """``(size, interpolation)`` of a resizing step, or None."""
    names = _names(step)
    if "ImageClassification" in names:  # a weights' transforms()
        return _one(step.resize_size), _mode(step.interpolation)
    if names & {"Resize", "ResizeKeepRatio"}:
        return _one(step.size), _mode(getattr(step, "interpolation", None))
    return None


def _crop_of(step: object) -> object:
    """The size of a centre crop, or None."""
    names = _names(step)
    if "ImageClassification" in names:
        return _one(step.crop_size)
    if names & {"CenterCrop", "CenterCropOrPad"}:
        return _one(step.size)
    return None


def _triple(values: object) -> tuple[float, ...]:
    """A mean or std as three numbers (``0.5`` becomes ``(0.5, 0.5, 0.5)``)."""
    flat = [float(v) for v in torch.as_tensor(values, dtype=torch.float64).flatten()]
    return tuple(flat * 3) if len(flat) == 1 else tuple(flat)


def _norm_of(step: object) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` of a normalising step, or None."""
    if _names(step) & {"Normalize", "ImageClassification"}:
        return _triple(step.mean), _triple(step.std)
    return None


def _fmt(values: Sequence[float]) -> str:
    """Numbers as a short tuple: ``(0.5, 0.5, 0.5)``."""
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    """Equal to three decimals, element by element."""
    return len(a) == len(b) and all(
        abs(float(x) - float(y)) < 1e-3 for x, y in zip(a, b, strict=True)
    )


@functools.cache
def _photo_array() -> np.ndarray:
    """A 320x240 test photo: smooth colour ramps, a ripple and a red block."""
    y, x = np.mgrid[0:240, 0:320]
    ripple = 128 + 100 * np.sin(x / 9.0) * np.cos(y / 13.0)
    array = np.stack([x * 255 / 320, y * 255 / 240, ripple], -1)
    array[60:120, 100:180] = [250, 20, 40]
    return np.clip(array, 0, 255).astype(np.uint8)


def _photo() -> Image.Image:
    """A fresh copy of the test photo, as ImageFolder gives it (a PIL image)."""
    return Image.fromarray(_photo_array())


def _apply(transform: Callable, runs: int = 4) -> tuple[list, str]:
    """The transform's outputs for the test photo under ``runs`` seeds, or the error
    it raised. The random generators of torch, numpy and Python are restored."""
    py_state, np_state, outputs = random.getstate(), np.random.get_state(), []
    try:
        with torch.random.fork_rng(devices=[]):
            for seed in range(runs):
                torch.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed)
                outputs.append(transform(_photo()))
    except Exception as err:
        return [], f"{type(err).__name__}: {_short(err)}"
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return outputs, ""


def _same(a: object, b: object) -> bool:
    """Are two outputs of a transform equal (tensors, images, arrays)?"""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except Exception:
        return False


def _judge_fixed(result: CheckResult, steps: list, outputs: list) -> None:
    """Evaluation preprocessing must be the same for the same photo every time."""
    random_steps = [type(s).__name__ for s in steps if _is_random(s)]
    varies = len(outputs) > 1 and not all(_same(outputs[0], o) for o in outputs[1:])
    if varies and not random_steps:
        random_steps = ["a step"]
    result.check(
        not random_steps,
        "every step is fixed: the same photo gives the same tensor every time",
        f"{', '.join(random_steps)} {_is(random_steps)} random: "
        "evaluation preprocessing must give the same tensor for the same photo every "
        "time (augmentation belongs to the training transform only)",
    )


def _judge_resize(result: CheckResult, steps: list, cfg: dict, size: int) -> None:
    """A resize of the shorter side as in pretraining, then a centre crop."""
    wrong_before = len(result.failed)
    resizes = [r for r in map(_resize_of, steps) if r is not None]
    if resizes:
        _judge_resize_step(result, *resizes[-1], cfg, size)
        if not any(_crop_of(step) is not None for step in steps):
            result.failed.append(
                "there is no CenterCrop: the model was pretrained on square centre "
                "crops"
            )
    elif not any("Resize" in type(s).__name__ for s in steps):  # else: random, said
        result.failed.append(
            "there is no Resize: every photo would keep its own size, so photos "
            "could not be batched, and the model would see objects at another "
            "scale than in pretraining"
        )
    if len(result.failed) > wrong_before or not resizes:
        result.answers.append(_answer_resize(cfg, size))


def _judge_resize_step(
    result: CheckResult, side: object, mode: str | None, cfg: dict, size: int
) -> None:
    """The resize's size (one number, by the crop ratio) and its interpolation."""
    want = int(size / cfg.get("crop_pct", 0.875))
    if not isinstance(side, int):
        result.failed.append(
            f"Resize({side}) stretches every photo to that shape: give one number, "
            "the shorter side, to keep the aspect ratio as in pretraining"
        )
    else:
        result.check(
            abs(side - want) <= 1,
            f"Resize({side}), as in pretraining",
            f"Resize({side}): the model was pretrained on centre crops of photos "
            "resized to another size (its crop_pct)",
        )
    want_mode = _mode(cfg.get("interpolation"))
    if mode is not None and want_mode is not None:
        result.check(
            mode == want_mode,
            f"{mode} interpolation, as in pretraining",
            f"Resize uses {mode} interpolation; the model was pretrained with "
            "another one (chapter 1's exercise measures how much that costs)",
        )


def _answer_resize(cfg: dict, size: int) -> str:
    """The resize and crop of the model's pretraining, as an answer."""
    want = int(size / cfg.get("crop_pct", 0.875))
    mode = _mode(cfg.get("interpolation")) or "bilinear"
    return f"Resize({want}, {mode} interpolation), then CenterCrop({size})"


def _judge_normalize(result: CheckResult, steps: list, cfg: dict) -> None:
    """One Normalize, with the pretraining's mean and std, after the conversion."""
    mean, std = _triple(cfg["mean"]), _triple(cfg["std"])
    answer = f"Normalize(mean={_fmt(mean)}, std={_fmt(std)}), after ToTensor"
    found = [(i, n) for i, n in enumerate(map(_norm_of, steps)) if n is not None]
    if not found:
        result.failed.append(
            "there is no Normalize step: the pixels would stay in [0, 1], not in the "
            "range the model saw in pretraining"
        )
        result.answers.append(answer)
        return
    if len(found) > 1:
        result.failed.append(
            f"it normalises {len(found)} times: keep one Normalize, or the pixels end "
            "up in another range than in pretraining"
        )
    at, (got_mean, got_std) = found[0]
    if not result.check(
        _close(got_mean, mean) and _close(got_std, std),
        f"Normalize uses mean {_fmt(got_mean)} and std {_fmt(got_std)}, the "
        "statistics of the model's pretraining",
        f"Normalize uses mean {_fmt(got_mean)} and std {_fmt(got_std)}, not the "
        "statistics this model was pretrained with (tl.data_config(model) knows them)",
    ):
        result.answers.append(answer)
    tensor_at = next((i for i, s in enumerate(steps) if _names(s) & _TO_TENSOR), None)
    result.check(
        tensor_at is not None and tensor_at <= at,
        "the photo becomes a tensor before Normalize",
        "Normalize comes before the photo becomes a tensor: it works on tensors with "
        "pixels in [0, 1], so convert first (transforms.ToTensor(), or v2.ToImage() "
        "and v2.ToDtype(torch.float32, scale=True))",
    )


def _judge_output(result: CheckResult, out: object, size: int) -> bool:
    """A float tensor of shape (3, size, size)?"""
    if not isinstance(out, torch.Tensor):
        result.failed.append(
            f"it returns {_describe(out)}, not a tensor: end with the tensor "
            "conversion and Normalize"
        )
        return False
    if not out.is_floating_point():
        result.failed.append(
            f"it returns {out.dtype} pixels (0-255): convert them to floats in [0, 1] "
            "before Normalize (ToTensor, or v2.ToDtype(torch.float32, scale=True))"
        )
        return False
    return result.check(
        tuple(out.shape) == (3, size, size),
        f"it gives {size}x{size} px images, the size the model was pretrained at",
        f"it turns a 320x240 photo into a tensor of shape {tuple(out.shape)}, but the "
        f"model was pretrained on (3, {size}, {size}) crops",
    )


def _judge_values(result: CheckResult, out: torch.Tensor, cfg: dict) -> None:
    """Compare with the model's own preprocessing on the test photo."""
    reference = create_transform(cfg)(_photo())
    gap = float((out.float() - reference).abs().mean())
    if gap <= 0.02:
        result.passed.append(
            "on a test photo it gives the tensor of the model's own preprocessing"
        )
    elif not result.failed:
        result.failed.append(
            f"on a test photo its output differs from the model's own preprocessing "
            f"by {gap:.2f} per value on average"
        )


@_never_raises("Preprocessing", "check_preprocessing(transform, model)")
def check_preprocessing(
    transform: Callable, model: nn.Module, reveal: bool = False
) -> CheckResult:
    """Does ``transform`` prepare a photo for evaluation the way ``model`` was
    pretrained (chapter 1)?

    Accepts torchvision transforms v1 and v2, timm's, a weights' ``transforms()`` and
    scalar ``Normalize(0.5, 0.5)``. Checks that every step is fixed (no augmentation),
    the resize of the shorter side, the centre crop to the pretraining size, the
    interpolation, one Normalize with the pretraining's mean and std after the tensor
    conversion, and runs the pipeline on a test photo. ``reveal=True`` shows the
    expected values of a wrong answer.
    """
    result = CheckResult("Preprocessing", revealed=reveal)
    call = "check_preprocessing(transform, model)"
    if not _need_model(result, model, call, [transform]):
        return result
    cfg = _config(model)
    if cfg is None:
        result.failed.append(
            f"{_describe(model)} has no pretrained_cfg, so its preprocessing is not "
            "known: create the model with tl.create_model(...)"
        )
        return result
    if transform is None or not callable(transform) or _is_model(transform):
        result.failed.append(
            f"expected a transform (transforms.Compose([...])) where you passed "
            f"{_describe(transform)}"
        )
        return result
    _judge_pipeline(result, transform, cfg)
    return result


def _judge_pipeline(result: CheckResult, transform: Callable, cfg: dict) -> None:
    """The structural verdicts, then the verdicts of a run on the test photo."""
    steps, size = _steps(transform), int(cfg["input_size"][-1])
    outputs, error = _apply(transform)
    _judge_fixed(result, steps, outputs)
    _judge_resize(result, steps, cfg, size)
    _judge_normalize(result, steps, cfg)
    if error:
        result.failed.append(
            f"on a 320x240 RGB photo (a PIL image, as ImageFolder gives) your pipeline "
            f"raises {error}"
        )
    elif _judge_output(result, outputs[0], size):
        _judge_values(result, outputs[0], cfg)


# ----------------------------------------------------------------- chapter 2


@_never_raises("New head", "check_new_head(model, num_classes)")
def check_new_head(
    model: nn.Module, num_classes: int, reveal: bool = False
) -> CheckResult:
    """Has the ImageNet head been replaced by a trainable one with ``num_classes``
    outputs (chapter 2)?

    A forward pass at the model's own input size (``pretrained_cfg``; 224 px where it
    has none) checks that the head fits the body and gives one logit per class; a
    multi-layer head counts as head. ``reveal=True`` shows the right layer size.
    """
    result = CheckResult("New head", revealed=reveal)
    call = "check_new_head(model, num_classes)"
    if not _need_model(result, model, call, [num_classes]):
        return result
    found = _need_count(result, num_classes, "num_classes") and _find_head(
        result, model
    )
    if not found:
        return result
    name, head = found
    size = _input_size(model)
    logits, error, fed = _forward(model, size, head)
    if logits is None:
        answer = _judge_head_input(result, head, fed, error, size)
        if answer:
            result.answers.append(answer.replace("...", str(num_classes)))
    outputs = (
        logits.shape[-1]
        if logits is not None
        else getattr((_linears(head) or [None])[-1], "out_features", None)
    )
    _judge_class_count(result, outputs, num_classes, logits, size)
    _judge_head_trainable(result, name, head)
    return result


def _judge_class_count(
    result: CheckResult,
    outputs: int | None,
    num_classes: int,
    logits: torch.Tensor | None,
    size: int,
) -> None:
    """One output per class, where the ImageNet head had 1000."""
    shape_ok = logits is None or logits.ndim == 2
    result.check(
        outputs == num_classes and shape_ok,
        f"the head gives {num_classes} outputs, one per class"
        + (f" (a forward pass at {size} px)" if logits is not None else ""),
        f"the head gives {outputs} outputs, but the dataset has {num_classes} classes"
        + (": that is still the ImageNet head, replace it" if outputs == 1000 else "")
        + ("" if shape_ok else f" (output shape {tuple(logits.shape)})"),
    )


@_never_raises("Frozen body, trainable head", "check_frozen_body(model)")
def check_frozen_body(model: nn.Module) -> CheckResult:
    """Is everything frozen except the head, as in feature extraction (chapter 2)?

    The head is all of what sits where the ImageNet head sat, so a two-layer head's
    hidden layer counts as head.
    """
    result = CheckResult("Frozen body, trainable head")
    if not _need_model(result, model, "check_frozen_body(model)"):
        return result
    found = _find_head(result, model)
    if found is None:
        return result
    name, head = found
    head_ids = {id(p) for p in head.parameters()}
    body = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and id(p) not in head_ids
    ]
    result.check(
        not body,
        "no parameter of the body is trainable",
        f"{len(body)} body parameter tensors are still trainable, e.g. {body[:3]}",
    )
    _judge_head_trainable(result, name, head)
    return result


def _batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every BatchNorm layer, timm's variants (``BatchNormAct2d``) included."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]


@_never_raises("BatchNorm of the frozen body", "check_frozen_batchnorm(model)")
def check_frozen_batchnorm(model: nn.Module) -> CheckResult:
    """After ``model.train()``: are the frozen BatchNorm layers back in eval mode, and
    only they, so that dropout still works (chapter 2)?"""
    result = CheckResult("BatchNorm of the frozen body")
    if not _need_model(result, model, "check_frozen_batchnorm(model)"):
        return result
    bns = _batchnorms(model)
    if not bns:
        result.unjudged.append(
            f"{_describe(model)} has no BatchNorm layer: there is nothing to keep in "
            "eval mode"
        )
        return result
    frozen = [
        (n, m) for n, m in bns if not any(p.requires_grad for p in m.parameters())
    ]
    if not result.check(
        bool(frozen),
        f"{len(frozen)} BatchNorm layers are frozen",
        "no BatchNorm layer is frozen: this exercise starts from a frozen network",
    ):
        return result
    _judge_bn_modes(result, frozen)
    _judge_rest_in_train_mode(result, model)
    return result


_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _judge_bn_modes(result: CheckResult, frozen: list[tuple[str, nn.Module]]) -> None:
    """Every frozen BatchNorm layer in eval mode, with a hint for missed subclasses."""
    moving = [(n, m) for n, m in frozen if m.training]
    subclass = any(type(m) not in _PLAIN_BN for _, m in moving)
    result.check(
        not moving,
        "every frozen BatchNorm layer is in eval mode: its running statistics will not "
        "change",
        f"{len(moving)} frozen BatchNorm layers are in train mode (e.g. "
        f"{', '.join(f'{n} ({type(m).__name__})' for n, m in moving[:2])}): every "
        "forward pass in training would overwrite their ImageNet statistics"
        + (
            "; timm's BatchNormAct2d is a subclass of nn.BatchNorm2d, so test with "
            "isinstance, not type(...) =="
            if subclass
            else ""
        ),
    )


def _judge_rest_in_train_mode(result: CheckResult, model: nn.Module) -> None:
    """Only the BatchNorm layers go to eval mode: dropout must keep working."""
    bn_ids = {id(m) for _, bn in _batchnorms(model) for m in bn.modules()}
    idle = [
        n or "the model"
        for n, m in model.named_modules()
        if id(m) not in bn_ids and not m.training
    ]
    if not model.training:
        wrong = (
            "the whole network is in eval mode (net.eval()): dropout is switched off "
            "too; put only the BatchNorm layers into eval mode"
        )
    else:
        wrong = (
            f"{len(idle)} layers other than BatchNorm are in eval mode too (e.g. "
            f"{', '.join(idle[:3])}): only the BatchNorm layers should be"
        )
    result.check(
        not idle,
        "every other layer stays in train mode (dropout still works)",
        wrong,
    )


# ----------------------------------------------------------------- chapter 3


@dataclass(frozen=True)
class _Described:
    """A dataset that chapter 3's exercise describes, and the truth about it."""

    name: str
    per_class: int
    similar: bool
    why: str  # why it is like ImageNet, or not


_DESCRIBED = (
    _Described(
        "kitchen utensils",
        40,
        True,
        "photos of everyday objects, like ImageNet's (which has spatulas, ladles and "
        "frying pans)",
    ),
    _Described(
        "chest X-rays",
        3000,
        False,
        "grey medical scans labelled healthy or pneumonia, nothing like ImageNet's "
        "photos of objects and animals",
    ),
    _Described(
        "bird-song spectrograms",
        25,
        False,
        "pictures of sound, not photos of things, with labels that ImageNet has no "
        "counterpart for",
    ),
    _Described(
        "dog breeds",
        800,
        True,
        "photos of dogs, and ImageNet itself has about 120 dog breeds",
    ),
)
_KEYWORDS = {
    "utensil": 0,
    "kitchen": 0,
    "x-ray": 1,
    "xray": 1,
    "x ray": 1,
    "spectrogram": 2,
    "bird": 2,
    "dog": 3,
}


def _described(name: object) -> _Described | None:
    """The exercise's dataset that ``name`` means ("chest X-rays", "(b)", "b")."""
    if not isinstance(name, str):
        return None
    key = name.lower().strip().strip("()").strip()
    if len(key) == 1 and key in "abcd":
        return _DESCRIBED["abcd".index(key)]
    return next((_DESCRIBED[i] for word, i in _KEYWORDS.items() if word in key), None)


_CASE_FACTS = {1: (True, True), 2: (True, False), 3: (False, True), 4: (False, False)}


def _valid_case(result: CheckResult, case: object) -> bool:
    """Is ``case`` 1, 2, 3 or 4? If not, a ``[wrong]`` line."""
    if (
        isinstance(case, numbers.Integral)
        and not isinstance(case, bool)
        and case in _CASE_FACTS
    ):
        return True
    result.failed.append(f"your case should be 1, 2, 3 or 4, got {_describe(case)}")
    return False


def _judge_case(
    result: CheckResult, case: int, per_class: int, similar: bool, name: str
) -> None:
    """Case against the rule for these facts; the hint names only the wrong fact(s)."""
    expected = recommend_case(per_class, similar)
    size = f"{per_class:,} per class is {expected.size}"
    kind = f"{name} {'are' if name != 'the data' else 'is'} {expected.similarity}"
    said_small, said_similar = _CASE_FACTS[int(case)]
    if result.check(
        case == expected.case,
        f"case {case}: {size} and {kind}, so {expected.strategy}",
        f"not case {case}: "
        + " and ".join(
            reason
            for reason, wrong in [
                (size, said_small != (expected.size == "small")),
                (kind, said_similar != similar),
            ]
            if wrong
        ),
    ):
        return
    result.answers.append(
        f"case {expected.case} ({expected.strategy}): {expected.size} and "
        f"{expected.similarity}"
    )


def _judge_facts(
    result: CheckResult, truth: _Described, per_class: object, similar: object
) -> None:
    """The learner's facts against the dataset the exercise describes."""
    if per_class is not None:
        result.check(
            per_class == truth.per_class,
            f"{truth.per_class:,} images per class",
            f"you entered {_describe(per_class)} images per class; the exercise "
            f"describes {truth.per_class:,}",
        )
    if similar is None:
        return
    if not isinstance(similar, bool):
        result.failed.append(
            f"similar should be True or False, got {_describe(similar)}"
        )
        return
    word = "similar to" if similar else "different from"
    result.check(
        similar == truth.similar,
        f"{truth.name} are {'similar to' if truth.similar else 'different from'} "
        f"ImageNet: {truth.why}",
        f"you judged {truth.name} {word} ImageNet, but they are {truth.why}",
    )


@_never_raises("Four-case rule", "check_case(case, images_per_class, similar)")
def check_case(
    case: int,
    images_per_class: int | None = None,
    similar: bool | None = None,
    *,
    dataset: str | None = None,
    reveal: bool = False,
) -> CheckResult:
    """Is ``case`` (1-4) the four-case rule's case for a dataset (chapter 3)?

    With ``dataset`` (a name from the exercise: "kitchen utensils", "chest X-rays",
    "bird-song spectrograms", "dog breeds", or its letter) the check judges against the
    truth about that dataset: your images per class, your similarity judgement and your
    case. Without it, it can only say whether your case follows from your own facts, and
    says that it cannot judge those. A wrong case gets a hint (which fact rules it out);
    ``reveal=True`` shows the right case.
    """
    result = CheckResult("Four-case rule", revealed=reveal)
    if not _valid_case(result, case):
        return result
    if dataset is None:
        return _case_by_your_facts(result, case, images_per_class, similar)
    truth = _described(dataset)
    if truth is None:
        names = ", ".join(repr(d.name) for d in _DESCRIBED)
        result.failed.append(
            f"no dataset of the exercise is called {_describe(dataset)}: they are "
            f"{names}; leave dataset out to check your case against your own facts"
        )
        return result
    _judge_facts(result, truth, images_per_class, similar)
    _judge_case(result, case, truth.per_class, truth.similar, truth.name)
    return result


def _case_by_your_facts(
    result: CheckResult, case: int, per_class: object, similar: object
) -> CheckResult:
    """Consistency with the learner's own facts, which the check cannot judge."""
    try:
        recommend_case(per_class, similar)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        result.failed.append(
            f"{_short(err)} (received images_per_class={_describe(per_class)}, "
            f"similar={_describe(similar)})"
        )
        return result
    _judge_case(result, case, int(per_class), bool(similar), "the data")
    if not result.failed:
        result.unjudged.append(
            "whether these facts describe the dataset (is it really like ImageNet?): "
            'name it, e.g. dataset="chest X-rays", and the check judges them too'
        )
    return result


@dataclass(frozen=True)
class _Lite0:
    """EfficientNet-Lite0's ImageNet body, tensor by tensor, with their stages."""

    body: tuple[torch.Tensor, ...]
    stages: tuple[int, ...]
    classifier: torch.Tensor


@functools.cache
def _lite0() -> _Lite0:
    """The offline EfficientNet-Lite0's ImageNet tensors, loaded once."""
    model = create_model()
    stage_of = {}
    for stage, modules in enumerate(stage_modules(model)):
        for module in modules:
            for n, _ in model.get_submodule(module).named_parameters():
                stage_of[f"{module}.{n}"] = stage
    named = [
        (n, p) for n, p in model.named_parameters() if not n.startswith("classifier")
    ]
    return _Lite0(
        body=tuple(p.detach().clone() for _, p in named),
        stages=tuple(stage_of[n] for n, _ in named),
        classifier=model.classifier.weight.detach().clone(),
    )


def _judge_lite0_body(
    result: CheckResult, body: list[torch.Tensor], strategy: str
) -> bool:
    """Is the body (part of) Lite0, with the weights the strategy starts from?"""
    ref = _lite0()
    if (
        not body
        or len(body) > len(ref.body)
        or any(p.shape != q.shape for p, q in zip(body, ref.body))
    ):
        result.failed.append(
            "the body is not EfficientNet-Lite0's: this check knows the weights of "
            "tl.create_model() only"
        )
        return False
    same = [torch.equal(p.detach().cpu(), q) for p, q in zip(body, ref.body)]
    full, cut = len(body) == len(ref.body), ref.stages[len(body) - 1]
    if strategy == "scratch":
        _judge_scratch_body(result, full, cut, sum(same))
    elif strategy == "cut_probe":
        _judge_cut_body(result, full, cut, all(same))
    else:
        _judge_whole_body(result, full, cut, all(same), strategy)
    return True


def _judge_scratch_body(result: CheckResult, full: bool, cut: int, same: int) -> None:
    """Random weights throughout the whole body."""
    if full:
        result.check(
            same == 0,
            "the body is all of Lite0, with random weights",
            f"{same} body tensors have the ImageNet weights, but training from scratch "
            "starts from random ones (pretrained=False)",
        )
    else:
        result.failed.append(
            f"the body is Lite0 only up to stage {cut}: scratch trains all of it"
        )


def _judge_cut_body(
    result: CheckResult, full: bool, cut: int, pretrained: bool
) -> None:
    """The ImageNet body up to a stage below the last."""
    result.check(
        not full,
        f"the body is Lite0 cut after stage {cut}",
        "the body is the whole of Lite0: that is the linear probe; a cut probe keeps "
        "the stages up to a middle one (tl.stages.body_to_stage)",
    )
    result.check(
        pretrained,
        "the body has the ImageNet weights",
        "the body's weights are not the ImageNet ones: a cut probe reuses the "
        "pretrained body (pretrained=True)",
    )


def _judge_whole_body(
    result: CheckResult, full: bool, cut: int, pretrained: bool, strategy: str
) -> None:
    """The whole body, with the ImageNet weights."""
    if not full:
        result.failed.append(
            f"the body is Lite0 only up to stage {cut}: {strategy} keeps the whole body"
        )
        return
    result.check(
        pretrained,
        "the body starts from the ImageNet weights",
        f"the body has random weights, but {strategy} starts from the ImageNet ones "
        "(pretrained=True)",
    )


def _judge_trainable_body(
    result: CheckResult, body: list[torch.Tensor], strategy: str
) -> None:
    """Probes freeze the body; fine-tuning and scratch train all of it."""
    trainable = sum(p.requires_grad for p in body)
    if strategy in ("linear_probe", "cut_probe"):
        result.check(
            trainable == 0,
            "the body is frozen",
            f"{trainable} body parameter tensors are trainable; a "
            f"{strategy.replace('_', ' ')} trains only the head",
        )
        return
    result.check(
        trainable == len(body),
        "every body parameter is trainable",
        f"{len(body) - trainable} body parameter tensors are frozen; {strategy} "
        "trains the whole network (tl.unfreeze(model))",
    )


def _judge_strategy_head(
    result: CheckResult, model: nn.Module, head: nn.Module, num_classes: int | None
) -> None:
    """A new head with one output per class, that fits the body."""
    size = _input_size(model)
    logits, error, fed = _forward(model, size, head)
    if logits is None:
        _judge_head_input(result, head, fed, error, size)
        return
    outputs = int(logits.shape[-1])
    last = (_linears(head) or [None])[-1]
    old = last is not None and torch.equal(
        last.weight.detach().cpu(), _lite0().classifier
    )
    if old or num_classes is None:
        result.check(
            not old and outputs != 1000,
            f"the head is new, with {outputs} outputs",
            "the head is still the ImageNet head (1000 outputs): replace it",
        )
    if num_classes is None:
        result.unjudged.append(
            "the number of classes: pass num_classes= and the check compares it with "
            "the head's outputs"
        )
    elif not old:
        _judge_class_count(result, outputs, num_classes, logits, size)


@_never_raises("Strategy", "check_strategy(model, strategy, num_classes)")
def check_strategy(
    model: nn.Module, strategy: str, num_classes: int | None = None
) -> CheckResult:
    """Is an EfficientNet-Lite0 set up for a strategy of chapter 3 (chapter 3)?

    ``strategy`` is one of :data:`tlutils.rule.STRATEGIES`: ``"linear_probe"``
    (ImageNet body, frozen), ``"cut_probe"`` (the ImageNet body up to a middle stage,
    frozen), ``"fine_tune"`` (ImageNet body, all trainable), ``"scratch"`` (random
    body, all trainable). Every strategy needs a new, trainable head that fits the body;
    with ``num_classes`` the check counts its outputs.
    """
    call = "check_strategy(model, strategy, num_classes)"
    result = CheckResult(f"Strategy {_describe(strategy)}")
    if strategy not in STRATEGIES:
        result.failed.append(
            f"the strategy should be one of {', '.join(STRATEGIES)}, got "
            f"{_describe(strategy)}"
            + (
                f": the arguments look swapped, the call is {call}"
                if _is_model(strategy)
                else ""
            )
        )
        return result
    if not _need_model(result, model, call) or (
        num_classes is not None and not _need_count(result, num_classes, "num_classes")
    ):
        return result
    found = _find_head(result, model)
    if found is None:
        return result
    name, head = found
    head_ids = {id(p) for p in head.parameters()}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    if _judge_lite0_body(result, body, strategy):
        _judge_trainable_body(result, body, strategy)
    _judge_strategy_head(result, model, head, num_classes)
    _judge_head_trainable(result, name, head)
    return result


# ----------------------------------------------------------------- chapter 4


def _param_groups(
    result: CheckResult, optimizer: object, model: object, call: str
) -> list[dict] | None:
    """The optimizer's parameter groups, or a ``[wrong]`` line naming what came."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer.param_groups
    if _is_model(optimizer) and isinstance(model, torch.optim.Optimizer):
        wrong = f"the arguments look swapped: the call is {call}"
    elif (
        isinstance(optimizer, (list, tuple))
        and optimizer
        and all(isinstance(g, dict) for g in optimizer)
    ):
        wrong = (
            "you passed a list of parameter groups, not an optimizer: build one from "
            "it, torch.optim.Adam(groups)"
        )
    else:
        wrong = (
            "expected an optimizer (torch.optim.Adam(...)) where you passed "
            f"{_describe(optimizer)}"
        )
    result.failed.append(wrong)
    return None


def _rates(groups: list[dict]) -> dict[int, float]:
    """Learning rate of every parameter in the groups, by ``id``."""
    return {id(p): float(g["lr"]) for g in groups for p in g["params"]}


def _stages(model: nn.Module, head_ids: set[int]) -> list[tuple[int, str, list]]:
    """``(number, modules, [(name, parameter)])`` of every stage with parameters."""
    named = [(n, p) for n, p in model.named_parameters() if id(p) not in head_ids]
    out = []
    for i, modules in enumerate(stage_modules(model)):
        prefixes = tuple(m + "." for m in modules)
        params = [(n, p) for n, p in named if n in modules or n.startswith(prefixes)]
        if params:
            out.append((i, ", ".join(modules), params))
    return out


def _stage_text(stages: list[tuple[int, str, list]]) -> str:
    """``stage 6 (blocks.5)`` or ``stages 0-6`` or ``stages 2, 5 and 7``."""
    numbers_ = [s[0] for s in stages]
    if len(stages) == 1:
        return f"stage {stages[0][0]} ({stages[0][1]})"
    if numbers_ == list(range(numbers_[0], numbers_[-1] + 1)):
        return f"stages {numbers_[0]}-{numbers_[-1]}"
    return "stages " + ", ".join(map(str, numbers_[:-1])) + f" and {numbers_[-1]}"


def _is(items: Sized) -> str:
    """``is`` or ``are``."""
    return "is" if len(items) == 1 else "are"


def _need_head(
    result: CheckResult, model: nn.Module, num_classes: int | None
) -> tuple[str, nn.Module] | None:
    """The head, which must be a new one (not ImageNet's 1000 classes)."""
    found = _find_head(result, model)
    if found is None:
        return None
    outputs = getattr((_linears(found[1]) or [None])[-1], "out_features", None)
    if num_classes is None:
        result.check(
            outputs != 1000,
            f"the head is new, with {outputs} outputs",
            "the head is still the ImageNet head (1000 outputs): replace it first",
        )
    else:
        result.check(
            outputs == num_classes,
            f"the head has {num_classes} outputs, one per class",
            f"the head has {outputs} outputs, but the dataset has {num_classes} "
            "classes",
        )
    return found


@_never_raises(
    "Discriminative learning rates", "check_discriminative_lrs(optimizer, model)"
)
def check_discriminative_lrs(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    head_lr: float = 1e-3,
    num_classes: int | None = None,
) -> CheckResult:
    """An Adam optimizer in which the new head learns at ``head_lr`` and every stage
    learns more slowly than the stage above it (chapter 4)?

    Stages are those of :func:`tlutils.stages.stage_modules`; every parameter must be
    trainable and in the optimizer, with a positive rate. ``num_classes`` checks the
    head's outputs; without it, the head must at least not be ImageNet's.
    """
    result = CheckResult("Discriminative learning rates")
    call = "check_discriminative_lrs(optimizer, model)"
    groups = _param_groups(result, optimizer, model, call)
    if groups is None or not _need_model(result, model, call):
        return result
    result.check(
        isinstance(optimizer, torch.optim.Adam),
        "it is an Adam optimizer",
        f"it is {_describe(optimizer)}; the exercise asks for Adam",
    )
    found = _need_head(result, model, num_classes)
    if found is None:
        return result
    rates = _rates(groups)
    _judge_all_trained(result, model, rates)
    head_ids = {id(p) for p in found[1].parameters()}
    head_rates = [rates[i] for i in head_ids if i in rates]
    _judge_head_rate(result, head_rates, head_lr)
    _judge_stage_order(result, _stages(model, head_ids), rates, head_rates)
    return result


def _judge_all_trained(
    result: CheckResult, model: nn.Module, rates: dict[int, float]
) -> None:
    """Every parameter trainable and in a parameter group."""
    named = list(model.named_parameters())
    frozen = [n for n, p in named if not p.requires_grad]
    missing = [n for n, p in named if p.requires_grad and id(p) not in rates]
    if not any(id(p) in rates for _, p in named):
        result.failed.append(
            "none of the model's parameters is in the optimizer: was it built for "
            "another model?"
        )
        return
    result.check(
        not missing,
        "every trainable parameter is in the optimizer",
        f"{len(missing)} trainable parameter tensors are in no parameter group, e.g. "
        f"{missing[:3]}: they would never learn",
    )
    result.check(
        not frozen,
        "every parameter is trainable",
        f"{len(frozen)} parameter tensors are frozen, e.g. {frozen[:3]}: every stage "
        "should learn, each at its own rate",
    )


def _judge_head_rate(
    result: CheckResult, head_rates: list[float], head_lr: float
) -> None:
    """The head at the rate the exercise asks for."""
    if not head_rates:
        result.failed.append("the head is in no parameter group: it would never learn")
        return
    result.check(
        all(math.isclose(r, head_lr, rel_tol=1e-6) for r in head_rates),
        f"the head learns at {head_lr:g}",
        f"the head learns at {', '.join(f'{r:g}' for r in sorted(set(head_rates)))}; "
        f"the exercise asks for {head_lr:g}",
    )


def _judge_stage_order(
    result: CheckResult,
    stages: list[tuple[int, str, list]],
    rates: dict[int, float],
    head_rates: list[float],
) -> None:
    """Each stage strictly slower than the one above it, the top stage slower than the
    head, and no rate of 0."""
    levels = [
        (_stage_text([s]), [rates[id(p)] for _, p in s[2] if id(p) in rates])
        for s in stages
    ]
    levels = [(t, r) for t, r in levels if r] + [("the head", head_rates)]
    zero = [t for t, r in levels if min(r, default=1) <= 0]
    if zero:
        result.failed.append(f"{zero[0]} learns at 0: a rate of 0 does not learn")
    slow = [
        (a, b, max(ra), min(rb))
        for (a, ra), (b, rb) in zip(levels, levels[1:])
        if ra and rb and max(ra) >= min(rb)
    ]
    if not slow and len(levels) > 1:
        result.passed.append(
            f"each of the {len(levels) - 1} stages learns more slowly than the one "
            "above it"
        )
        return
    if not slow:
        return
    a, b, ra, rb = slow[0]
    result.failed.append(
        f"{a} learns at {ra:g}, not more slowly than {b} at {rb:g}: every stage must "
        "learn more slowly than the one above it"
        + (f" ({len(slow)} places like this)" if len(slow) > 1 else "")
    )


@_never_raises(
    "Fine-tuning setup (phase 2)",
    "check_fine_tune_setup(model, optimizer, warm_up_lr)",
)
def check_fine_tune_setup(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    warm_up_lr: float,
    stages: Sequence[int] = (7, 8),
) -> CheckResult:
    """Phase 2 of the recipe: are exactly ``stages`` of the body unfrozen (7 and 8 of
    EfficientNet-Lite0: ``blocks.6``, ``conv_head``, ``bn2``), with the head, in a new
    optimizer whose body rate is positive and at least 10 times below ``warm_up_lr``
    (chapter 4)?"""
    result = CheckResult("Fine-tuning setup (phase 2)")
    call = "check_fine_tune_setup(model, optimizer, warm_up_lr)"
    groups = _param_groups(result, optimizer, model, call)
    if groups is None or not _need_model(result, model, call):
        return result
    if not _positive(result, warm_up_lr, "warm_up_lr"):
        return result
    found = _find_head(result, model)
    if found is None:
        return result
    name, head = found
    head_ids = {id(p) for p in head.parameters()}
    by_stage = _stages(model, head_ids)
    _judge_unfrozen_stages(result, by_stage, set(stages))
    rates = _rates(groups)
    _judge_head_in_phase2(result, name, head, rates)
    unfrozen = [(n, p) for _, _, ps in by_stage for n, p in ps if p.requires_grad]
    _judge_body_rates(result, unfrozen, rates, warm_up_lr)
    return result


def _positive(result: CheckResult, value: object, what: str) -> bool:
    """Is ``value`` a positive number? If not, a ``[wrong]`` line."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0:
        return True
    result.failed.append(
        f"{what} should be a positive learning rate, got {_describe(value)}"
    )
    return False


def _judge_unfrozen_stages(
    result: CheckResult, by_stage: list[tuple[int, str, list]], wanted: set[int]
) -> None:
    """Exactly the wanted stages trainable, all of each; the rest frozen."""
    chosen = [s for s in by_stage if s[0] in wanted]
    if not chosen:
        result.failed.append(f"the model has no stage {sorted(wanted)} with parameters")
        return
    still = [s for s in chosen if not all(p.requires_grad for _, p in s[2])]
    if still:
        result.failed.append(
            f"{_stage_text(still)} {_is(still)} still frozen: unfreeze with tl.unfreeze"
        )
    else:
        result.passed.append(f"{_stage_text(chosen)} {_is(chosen)} unfrozen")
    extra = [
        s
        for s in by_stage
        if s[0] not in wanted and any(p.requires_grad for _, p in s[2])
    ]
    only = " and ".join(map(str, sorted(wanted)))
    if extra:
        result.failed.append(
            f"{_stage_text(extra)} {_is(extra)} unfrozen too: this phase unfreezes "
            f"stage(s) {only} "
            "only"
        )
    else:
        result.passed.append("the rest of the body stays frozen")


def _judge_head_in_phase2(
    result: CheckResult, name: str, head: nn.Module, rates: dict[int, float]
) -> None:
    """The head trainable and in the new optimizer."""
    params = list(head.parameters())
    _judge_head_trainable(result, name, head, "it would stop learning in phase 2")
    result.check(
        bool(params) and all(id(p) in rates for p in params),
        "the head is in the new optimizer",
        "the head is not in the new optimizer: it would stop learning in phase 2",
    )


def _judge_body_rates(
    result: CheckResult, unfrozen: list, rates: dict[int, float], warm_up_lr: float
) -> None:
    """The unfrozen body in the optimizer, at a small positive rate."""
    if not unfrozen:
        return
    missing = [n for n, p in unfrozen if id(p) not in rates]
    result.check(
        not missing,
        "every unfrozen body parameter is in the optimizer",
        f"{len(missing)} unfrozen body parameter tensors are not in the optimizer "
        f"(e.g. {missing[:2]}): create the optimizer after unfreezing",
    )
    body = [rates[id(p)] for _, p in unfrozen if id(p) in rates]
    if not body:
        return
    low, high = min(body), max(body)
    result.check(
        low > 0 and high <= warm_up_lr / 10 * (1 + 1e-9),
        f"the body learns at most at {high:g}, at least 10 times below the warm-up's "
        f"{warm_up_lr:g}",
        "the body learns at 0: a rate of 0 does not move it"
        if low <= 0
        else f"the body learns at {high:g}; keep it at least 10 times below the "
        f"warm-up's {warm_up_lr:g} so the pretrained filters move only a little",
    )


def _ranking_runs(scores: object) -> object:
    """One method's scores for :func:`tlutils.verdict.compare`: a flat sequence of
    numbers is one accuracy per seed (``[runs, 1]``); anything 2-D is per-image
    correctness per seed (``[runs, images]``, or one deterministic run as
    ``[[...]]``)."""
    if isinstance(scores, np.ndarray):
        return scores[:, None] if scores.ndim == 1 else scores
    items = list(scores)  # type: ignore[call-overload]
    if items and all(np.ndim(x) == 0 for x in items):
        return np.asarray(items, dtype=float)[:, None]
    return items


def _ranking_names(
    result: CheckResult, predicted: object, scores: object
) -> list[str] | None:
    """The predicted order, if it names every method exactly once."""
    if not isinstance(scores, Mapping) or len(scores) < 2:
        result.failed.append(
            "expected the scores as a dict, method -> runs, of at least two methods; "
            f"got {_describe(scores)}"
        )
        return None
    ordered = isinstance(predicted, (list, tuple, np.ndarray))
    names = list(predicted) if ordered else None
    if (
        names is None
        or sorted(map(str, names)) != sorted(map(str, scores))
        or len(set(map(str, names))) != len(names)
    ):
        result.failed.append(
            f"rank each of {', '.join(map(str, scores))} exactly once (a list, best "
            f"first); you gave {_short(repr(predicted), 60)}"
        )
        return None
    return [next(k for k in scores if str(k) == str(n)) for n in names]


def _judge_pair(result: CheckResult, better: str, worse: str, scores: Mapping) -> None:
    """One pair of the predicted order, by the verdict rule."""
    try:
        v = compare(_ranking_runs(scores[better]), _ranking_runs(scores[worse]))
    except (ValueError, TypeError) as err:
        result.failed.append(f"{better} against {worse}: {_short(err, 240)}")
        return
    said = v.sentence(better, worse)
    if v.verdict.startswith("A"):  # "A better", "A slightly better"
        result.passed.append(f"{better} above {worse}: right, {said}")
    elif v.verdict.startswith("B"):
        result.failed.append(f"{better} above {worse}? no: {said}")
    elif v.verdict == "equivalent":
        result.passed.append(f"{better} above {worse}: either order, {said}")
    else:
        result.unjudged.append(f"{better} above {worse}: the data cannot tell, {said}")


@_never_raises("Your ranking", "check_ranking(predicted, scores, what)")
def check_ranking(
    predicted: Sequence[str],
    scores: dict[str, object],
    what: str = "accuracy",
) -> CheckResult:
    """Does a predicted order (best first) agree with the course's verdict rule
    (chapter 4)?

    ``scores`` maps each method to its runs, the seeds in the same order for every
    method: per-image correctness ``[runs, images]`` (the same validation images, in
    the same order, for every method), or one accuracy per seed (a flat list, compared
    as ``[runs, 1]``). Every pair is judged by :func:`tlutils.verdict.compare`: the
    order is wrong only where the rule calls the lower-ranked method better (by any
    amount); where it says "equivalent" either order is right, and where it says
    "inconclusive" the data cannot tell, which the check says too (``[?]``). Where every
    pair is inconclusive the result says that this data cannot judge the order at all,
    not "all right".
    """
    result = CheckResult(f"Your ranking by {what}")
    names = _ranking_names(result, predicted, scores)
    if names is None:
        return result
    for i, better in enumerate(names):
        for worse in names[i + 1 :]:
            _judge_pair(result, better, worse, scores)
    if result.unjudged and not result.passed and not result.failed:
        result.unjudged.insert(
            0,
            "this data cannot judge your order: the verdict rule calls every pair "
            "inconclusive, so no order is right or wrong on it (more seeds or more "
            "images could decide)",
        )
    return result
