"""Save a trained model in one self-contained file, load it safely, export it (chapter 5).

A checkpoint is one file written with ``torch.save``: a dict of the weights (tensors) and
a JSON string of plain metadata (architecture name, class names, preprocessing, training
history). It is read back with ``torch.load(weights_only=True)``, which refuses arbitrary
pickled objects, so opening a checkpoint never runs code. It loads on a CPU when it was
trained on a GPU, and needs nothing but tlutils (for the architecture) to rebuild the
model. A cut probe (:class:`tlutils.stages.CutModel`: the body up to a stage, pooled, and
a linear head) is saved and loaded the same way. :func:`export_model` writes a
``torch.export`` program (``.pt2``) that runs with PyTorch alone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .cache import atomic_write
from .data import create_transform
from .models import create_model, data_config
from .stages import CutModel
from .train import History

__all__ = [
    "FORMAT",
    "TrainedModel",
    "trained_model",
    "save_model",
    "load_model",
    "export_model",
    "load_exported",
]

FORMAT = "tlutils-model"
"""The tag that marks a checkpoint written by :func:`save_model`."""
VERSION = 3
"""Version 3 added the temperature (calibration), version 2 cut probes (``"cut_stage"``);
older files load unchanged."""


@dataclass
class TrainedModel:
    """A classifier with what is needed to use it: class names, preprocessing and the
    temperature that calibrates its probabilities (chapter 5)."""

    model: nn.Module
    classes: list[str]
    architecture: str
    preprocessing: dict[str, Any]  # data_config of the model plus "image_size"
    history: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0  # divides the logits before the softmax (calibration)

    def transform(self):
        """The evaluation transform the model was trained with (chapter 5)."""
        config = {k: v for k, v in self.preprocessing.items() if k != "image_size"}
        return create_transform(config, image_size=self.preprocessing["image_size"])

    def fit_history(self) -> History:
        """The per-epoch training record as a :class:`tlutils.History`, e.g. for
        :func:`tlutils.plot_history` (chapter 5)."""
        names = {f.name for f in dataclasses.fields(History)}
        return History(**{k: v for k, v in self.history.items() if k in names})

    def against_probe(self):
        """The saved model against the diagnosis's probe on the same validation images,
        by the course's verdict rule (:func:`tlutils.verdict.compare`), from what
        :func:`tlutils.train_folder` stored; ``None`` for a model trained otherwise
        (chapter 5)."""
        from .verdict import compare

        mine = self.history.get("val_correct")
        probe = self.history.get("probe_val_correct")
        if not mine or not probe:
            return None
        return compare(np.asarray(mine, dtype=bool), np.asarray(probe, dtype=bool))


def trained_model(
    model: nn.Module,
    classes: list[str],
    architecture: str,
    image_size: int,
    history: Any = None,
) -> TrainedModel:
    """Bundle a trained model with its class names, preprocessing and history (chapter 5)."""
    preprocessing = {**data_config(model), "image_size": int(image_size)}
    preprocessing = json.loads(json.dumps(preprocessing))  # tuples become lists
    if dataclasses.is_dataclass(history):
        history = dataclasses.asdict(history)
    return TrainedModel(
        model, list(classes), architecture, preprocessing, history or {}
    )


def _atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` with ``torch.save`` in one step, checked to load back safely."""

    def check(tmp: str) -> None:
        torch.load(tmp, map_location="cpu", weights_only=True)

    atomic_write(path, lambda tmp: torch.save(obj, tmp), check)


def save_model(trained: TrainedModel, path: str | Path) -> Path:
    """Write weights, class names, preprocessing, architecture and history to one file (chapter 5).

    The file is written atomically: an interrupted save never leaves a half-written file.
    """
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": trained.architecture,
        "classes": trained.classes,
        "preprocessing": trained.preprocessing,
        "history": trained.history,
        "temperature": float(trained.temperature),
    }
    stage = getattr(trained.model, "cut_stage", None)
    if stage is not None:
        meta["cut_stage"] = int(stage)
    weights = {k: v.detach().cpu() for k, v in trained.model.state_dict().items()}
    path = Path(path)
    _atomic_save({"meta": json.dumps(meta), "state_dict": weights}, path)
    return path


def _read(path: Path) -> tuple[dict, dict]:
    """The metadata and weights of a checkpoint, or an error that says what is wrong."""
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist. Check the path.")
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(stored["meta"])
        weights = stored["state_dict"]
    except Exception as err:
        raise ValueError(
            f"{path} is not a tlutils checkpoint, or it is damaged ({type(err).__name__}: "
            f"{str(err)[:200]}). Save models with tl.save_model (or `tlutils train`) and "
            "copy the file again if it was cut short."
        ) from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a PyTorch file but not a tlutils checkpoint (no {FORMAT!r} tag). "
            "Save models with tl.save_model (or `tlutils train`)."
        )
    if meta.get("version", 0) > VERSION:
        raise ValueError(
            f"{path} was written by a newer tlutils (format version {meta['version']}); "
            "update tlutils to load it."
        )
    return meta, weights


def load_model(path: str | Path, device: torch.device | str = "cpu") -> TrainedModel:
    """Load a checkpoint written by :func:`save_model`, on ``device`` (CPU by default) (chapter 5).

    Foreign or damaged files and weights that do not fit the named architecture raise a
    ``ValueError`` that says so. The model is returned in eval mode.
    """
    path = Path(path)
    meta, weights = _read(path)
    model = create_model(
        meta["architecture"], pretrained=False, num_classes=len(meta["classes"])
    )
    if meta.get("cut_stage") is not None:
        model = CutModel(model, meta["cut_stage"], len(meta["classes"]))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"The weights in {path} do not fit architecture {meta['architecture']!r} with "
            f"{len(meta['classes'])} classes: {str(err)[:300]}"
        ) from err
    model.to(device).eval()
    return TrainedModel(
        model,
        meta["classes"],
        meta["architecture"],
        meta["preprocessing"],
        meta["history"],
        float(meta.get("temperature", 1.0)),  # files before version 3: none fitted
    )


def export_model(trained: TrainedModel, path: str | Path) -> Path:
    """Export the model with ``torch.export`` to a ``.pt2`` file that needs only PyTorch (chapter 5).

    The batch size is left free; the image size is the one the model was trained with.
    Class names and preprocessing go into the file's extra files as JSON.
    """
    size = trained.preprocessing["image_size"]
    model = copy.deepcopy(trained.model).cpu().eval()  # the caller's model stays put
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    meta = json.dumps({"classes": trained.classes, **trained.preprocessing,
                       "temperature": float(trained.temperature)})  # fmt: skip
    return atomic_write(
        path,
        lambda tmp: torch.export.save(program, tmp, extra_files={"tlutils.json": meta}),
    )


def load_exported(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load an exported ``.pt2`` model: ``(module, {"classes", preprocessing...})`` (chapter 5)."""
    extra = {"tlutils.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), json.loads(extra["tlutils.json"] or "{}")
