"""The course's one fine-tuning recipe: a value that says everything, run by one function
(chapters 3-5).

A :class:`Recipe` holds every choice of a fine-tuning run, each with its default stated once
here, as torchvision's reference ``train.py`` states its defaults in one place:

* **what trains**: ``stages`` (``None``: every stage of the model it is given, the whole
  body or a cut body; ``(6, 7, 8)``: the top three; ``(0, 1)``: the first two, "surgical"
  fine-tuning, Lee et al. 2023) and ``reinit`` (stages whose pretrained weights are
  replaced by random ones first: the layers above a cut, re-initialised as in Yosinski
  et al. 2014's AnB);
* **how the head starts**: ``"probe"`` (the converged linear probe, :func:`tlutils.probe.
  probe_head`: linear probing, then fine-tuning, Kumar et al. 2022), ``"random"`` (a new
  head, a cold start) or ``"keep"`` (the model's own);
* **the optimiser**: ``opt``, ``lr`` (the head's rate; ``decay`` < 1 gives each stage below
  a lower one), ``weight_decay``; **the schedule**: ``schedule`` after a linear warm-up of
  ``lr_warmup`` of the steps (a warm-up of the *learning rate*, not of the head);
* **the data**: ``augment`` (random resized crops and flips, crops only, or none),
  ``batch_size``; **BatchNorm**: ``bn_stats``; **the budget**: ``epochs``.

:func:`run` runs a recipe on a model through :func:`tlutils.fine_tune` and so through
:func:`tlutils.fit`, the one training loop. Chapter 3 and 4's experiments, the reference
runs (``scripts/reference_run.py``) and ``tlutils train`` all call it: what the book
measures is what the command runs. :data:`REFERENCE` is the recipe of the reference
budget; :func:`code_digest` fingerprints the code a recipe runs, so stored results can say
when the code changed under them.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import inspect
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from .train import BNStats, History, OptName, Schedule, _check_choice

__all__ = [
    "Head",
    "Augment",
    "Recipe",
    "REFERENCE",
    "run",
    "reinitialise",
    "code_digest",
]

Head = Literal["probe", "random", "keep"]
"""How the head starts: the converged probe, random weights, or the model's own."""
Augment = Literal["crop_flip", "crop", "none"]
"""The training images' augmentation: random resized crops (scale 0.5-1) and horizontal
flips, crops only (for images whose class a mirror image changes), or none."""


@dataclass(frozen=True)
class Recipe:
    """Every choice of a fine-tuning run, with the course's defaults (chapters 3-5)."""

    stages: tuple[int, ...] | None = None
    reinit: tuple[int, ...] = ()
    head: Head = "probe"
    opt: OptName = "adamw"
    lr: float = 1e-4
    decay: float = 1.0
    weight_decay: float = 0.05
    schedule: Schedule = "cosine"
    lr_warmup: float = 0.1
    augment: Augment = "crop_flip"
    batch_size: int = 32
    bn_stats: BNStats = "fixed"
    epochs: int = 3

    def __post_init__(self) -> None:
        _check_choice("head", self.head, Head)
        _check_choice("augment", self.augment, Augment)
        _check_choice("opt", self.opt, OptName)
        _check_choice("schedule", self.schedule, Schedule)
        _check_choice("bn_stats", self.bn_stats, BNStats)
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")
        if not 0 <= self.lr_warmup < 1:
            raise ValueError(
                f"lr_warmup is a share of the steps, from 0 to below 1; got "
                f"{self.lr_warmup}."
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1.")

    def replace(self, **changes) -> Recipe:
        """A copy with some choices changed, e.g. ``REFERENCE.replace(lr=3e-4)``."""
        return dataclasses.replace(self, **changes)

    def settings(self) -> dict:
        """Every choice as plain JSON values, e.g. for a results file (chapters 3-5)."""
        out = dataclasses.asdict(self)
        out["stages"] = None if self.stages is None else list(self.stages)
        out["reinit"] = list(self.reinit)
        return out

    def train_transform(self, config: dict, image_size: int):
        """The training images' preprocessing: the model's own, with this recipe's
        augmentation (:func:`tlutils.create_transform`) (chapters 3-5)."""
        from .data import create_transform

        return create_transform(
            config,
            train=self.augment != "none",
            image_size=image_size,
            flip=self.augment == "crop_flip",
        )

    def describe(self) -> str:
        """The recipe in one line of words, e.g. for a report (chapters 3-5)."""
        what = "every stage" if self.stages is None else f"stages {list(self.stages)}"
        if self.reinit:
            what += f" (stages {list(self.reinit)} re-initialised)"
        warm = f", {self.lr_warmup:.0%} linear lr warm-up" if self.lr_warmup else ""
        return (
            f"{what} from a {self.head} head, {self.opt} at lr {self.lr:g} "
            f"(weight decay {self.weight_decay:g}), {self.schedule} schedule{warm}, "
            f"{self.epochs} epochs of batches of {self.batch_size}, augmentation "
            f"{self.augment}, BatchNorm statistics {self.bn_stats}"
        )


REFERENCE = Recipe()
"""The recipe of the course's reference budget (chapters 3-5): the probe as the warm head,
every stage, AdamW at a rate chosen on held-out training images, weight decay 0.05, a
cosine schedule after a linear learning-rate warm-up of 10% of the steps, random resized
crops and flips, BatchNorm statistics fixed, three epochs of batches of 32."""


def reinitialise(model: nn.Module, stages: Sequence[int], seed: int = 0) -> None:
    """Replace the weights of ``stages`` by fresh random ones, in place (chapter 3): every
    layer's own initialisation (``reset_parameters``); BatchNorm layers also forget their
    running statistics. Seeded."""
    from .stages import stage_modules

    names = stage_modules(model)
    torch.manual_seed(seed)
    for s in stages:
        for name in names[s]:
            for module in model.get_submodule(name).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                if hasattr(module, "reset_running_stats"):
                    module.reset_running_stats()


def _set_head(recipe: Recipe, model: nn.Module, head, num_classes, seed: int) -> None:
    from .models import replace_head
    from .train import seed_everything

    if recipe.head == "keep":
        return
    if recipe.head == "probe":
        if head is None:
            raise ValueError(
                "This recipe starts from the probe: pass head=tl.probe.probe_head("
                "train_features, train_labels) (or use a recipe with head='random')."
            )
        replace_head(model, head.out_features, head=copy.deepcopy(head))
        return
    if num_classes is None:
        raise ValueError("A random head needs num_classes.")
    seed_everything(seed)
    replace_head(model, num_classes)


def run(
    recipe: Recipe,
    model: nn.Module,
    train: Dataset,
    val: Dataset | None = None,
    *,
    head: nn.Module | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    loss_fn: Callable = nn.functional.cross_entropy,
    keep_best: bool = False,
    patience: int | None = None,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    desc: str = "fine-tuning",
) -> History:
    """Fine-tune ``model`` in place with ``recipe`` on ``train``; its :class:`History`
    (chapters 3-5).

    ``train`` yields ``(input, label)`` pairs already prepared (its transform is the
    recipe's :meth:`Recipe.train_transform` for images; cached tensors need none).
    ``head`` is the probe head for ``recipe.head == "probe"`` (copied);
    ``num_classes`` sizes a random one. With ``val``, every epoch is scored and
    ``keep_best``/``patience`` work as in :func:`tlutils.fit`; ``on_epoch_end(epoch,
    model)`` runs after each epoch. Seeded: the same ``seed`` gives the same run on the
    same machine.
    """
    from .data import create_loader
    from .finetune import fine_tune
    from .train import seed_everything

    _set_head(recipe, model, head, num_classes, seed)
    if recipe.reinit:
        reinitialise(model, recipe.reinit, seed)
    seed_everything(seed)
    workers = {} if num_workers is None else {"num_workers": num_workers}
    loader = create_loader(
        train, batch_size=recipe.batch_size, shuffle=True, seed=seed, **workers
    )
    val_loader = None
    if val is not None:
        val_loader = create_loader(val, batch_size=128, **workers)
    steps = recipe.epochs * len(loader)
    warmup = max(1, round(recipe.lr_warmup * steps)) if recipe.lr_warmup else 0
    return fine_tune(
        model,
        loader,
        val_loader,
        epochs=recipe.epochs,
        lr=recipe.lr,
        decay=recipe.decay,
        stages=None if recipe.stages is None else list(recipe.stages),
        opt=recipe.opt,
        weight_decay=recipe.weight_decay,
        bn_stats=recipe.bn_stats,
        keep_best=keep_best and val_loader is not None,
        on_epoch_end=on_epoch_end,
        schedule=recipe.schedule,
        warmup_steps=min(warmup, steps - 1),
        patience=patience,
        loss_fn=loss_fn,
        device=device,
        progress=progress,
        desc=desc,
    )


_CODE: tuple[str, ...] = (
    "tlutils.recipe:Recipe",
    "tlutils.recipe:run",
    "tlutils.recipe:reinitialise",
    "tlutils.recipe:_set_head",
    "tlutils.finetune:fine_tune",
    "tlutils.finetune:param_groups",
    "tlutils.finetune:_named_stages",
    "tlutils.finetune:_params_of",
    "tlutils.train:fit",
    "tlutils.train:_train_epoch",
    "tlutils.train:lr_schedule",
    "tlutils.train:create_optimizer",
    "tlutils.train:_set_train_mode",
    "tlutils.train:_autocast",
    "tlutils.train:_grad_scaler",
    "tlutils.train:amp_dtype",
    "tlutils.train:seed_everything",
    "tlutils.models:replace_head",
    "tlutils.models:freeze",
    "tlutils.models:unfreeze",
    "tlutils.models:set_batchnorm_eval",
    "tlutils.stages:stage_modules",
    "tlutils.stages:head_modules",
    "tlutils.data:create_transform",
    "tlutils.data:create_loader",
    "tlutils.probe:probe_pipeline",
    "tlutils.probe:choose_probe_C",
    "tlutils.probe:fit_probe",
    "tlutils.probe:probe_as_linear",
    "tlutils.probe:probe_head",
    "tlutils.probe:choose_stage",
)
"""The functions a recipe's result depends on: :func:`run` and everything it calls to
train, the probe that makes its warm head and chooses a cut, and the preprocessing."""


def _without_docstrings(source: str) -> str:
    """The code of a function or class, its docstrings and comments dropped: a change of
    wording is not a change of code."""
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def code_digest(extra: Sequence[Callable | type] = ()) -> str:
    """A short SHA-256 of the code that a recipe's result depends on (chapters 3-5):
    :data:`_CODE` plus ``extra`` (a script's own functions), docstrings and comments left
    out. Stored with every reference result; when it changes, the results made by the old
    code are stale (``tests/test_reference_fresh.py`` names them)."""
    import importlib

    digest = hashlib.sha256()
    objects = []
    for path in _CODE:
        module, _, name = path.partition(":")
        objects.append(getattr(importlib.import_module(module), name))
    for obj in [*objects, *extra]:  # named by file, not module: a script run as
        # __main__ and the same script imported give one digest
        where = Path(inspect.getsourcefile(obj)).stem
        digest.update(f"{where}.{obj.__qualname__}".encode())
        digest.update(_without_docstrings(inspect.getsource(obj)).encode())
    return digest.hexdigest()[:16]
