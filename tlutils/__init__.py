"""tlutils: the helper package of the course book *Transfer Learning with PyTorch*.

Each module holds one idea; every function's docstring names the chapter that teaches it.
Modules and names load on first use (``tl.fit`` imports :mod:`tlutils.train`).

* :mod:`tlutils.models`: pretrained models (offline EfficientNet-Lite0), heads, freezing.
* :mod:`tlutils.datasets`: the course's datasets: mirror, download, checks.
* :mod:`tlutils.data`: folders of images, splits, transforms, loaders.
* :mod:`tlutils.train`: the one training loop (``fit``), optimisers, evaluation, device, seeding.
* :mod:`tlutils.stages`: one numbering of the stages of a network (0 = stem ... 8 = head conv).
* :mod:`tlutils.features`: frozen-backbone features, extracted once and cached.
* :mod:`tlutils.probe`: the linear probe, its penalty and the stage choice: one definition.
* :mod:`tlutils.recipe`: the one fine-tuning recipe, a value, and the function that runs it.
* :mod:`tlutils.rates`: the one learning-rate chooser, on held-out training images.
* :mod:`tlutils.verdict`: the one verdict rule: a paired interval over runs and images.
* :mod:`tlutils.cache`: files written in one step, and digests of their inputs.
* :mod:`tlutils.plot`: image grids, training curves, confusion matrices.
* :mod:`tlutils.layers`: what the layers see: filters, feature maps, 2-D maps of features (chapter 2).
* :mod:`tlutils.cases`: the four cases: the rule and the model of each strategy (chapter 3).
* :mod:`tlutils.finetune`: warm up, then fine-tune; discriminative learning rates (chapter 4).
* :mod:`tlutils.shift`: fixed image corruptions (a shift) and feature distortion (chapter 4).
* :mod:`tlutils.reference`: resumable reference runs with provenance (chapters 2-4).
* :mod:`tlutils.diagnosis`: measure your own folder and recommend a case (chapter 5).
* :mod:`tlutils.rule`: the four cases as a rule: which strategy for which data (chapters 3, 5).
* :mod:`tlutils.project`: train on your folder with the recipe (chapter 5).
* :mod:`tlutils.inference`: predict new images, score a labelled folder (chapter 5).
* :mod:`tlutils.errors`: the errors in pictures: confusion, worst mistakes, batches (chapter 5).
* :mod:`tlutils.data_issues`: suspected label errors and duplicates, measured (chapter 5).
* :mod:`tlutils.calibration`: calibration error, reliability diagrams, temperature (chapter 5).
* :mod:`tlutils.checkpoint`: save, load and export a trained model (chapter 5).
* :mod:`tlutils.cli`: the ``tlutils diagnose | train | predict`` command (chapter 5).
* :mod:`tlutils.book`: ``glue`` measured numbers into the book's prose.
* :mod:`tlutils.smoke`: the test-only cap under which the FULL smoke test runs the notebooks.
* :mod:`tlutils.checks`: self-checks for the hands-on exercises.
"""

_SUBMODULES = (
    "book",
    "cache",
    "calibration",
    "cases",
    "checkpoint",
    "checks",
    "cli",
    "data",
    "data_issues",
    "datasets",
    "diagnosis",
    "errors",
    "features",
    "finetune",
    "inference",
    "layers",
    "models",
    "plot",
    "probe",
    "project",
    "rates",
    "recipe",
    "reference",
    "rule",
    "shift",
    "smoke",
    "stages",
    "train",
    "verdict",
)
"""The modules, imported on first use: ``import tlutils`` itself loads no torch, so that
``tlutils --help`` answers at once."""

_ATTRIBUTES = {
    "glue": "book",
    "export_model": "checkpoint",
    "load_exported": "checkpoint",
    "load_model": "checkpoint",
    "save_model": "checkpoint",
    "DATASETS": "datasets",
    "ImageFolder": "data",
    "classes_of": "data",
    "create_loader": "data",
    "create_transform": "data",
    "dataset_dir": "datasets",
    "is_split_folder": "data",
    "load_dataset": "data",
    "load_image_folder": "data",
    "load_rgb": "data",
    "stratified_split": "data",
    "subsample_per_class": "data",
    "targets_of": "data",
    "verify_mirror": "datasets",
    "diagnose": "diagnosis",
    "scan_folder": "diagnosis",
    "extract_features": "features",
    "feature_extractor": "features",
    "features_dataset": "features",
    "stage_features": "features",
    "evaluate_folder": "inference",
    "predict_images": "inference",
    "DEFAULT_MODEL": "models",
    "count_parameters": "models",
    "create_model": "models",
    "data_config": "models",
    "freeze": "models",
    "get_head": "models",
    "imagenet_classes": "models",
    "lite0_state_dict": "models",
    "replace_head": "models",
    "set_batchnorm_eval": "models",
    "unfreeze": "models",
    "plot_confusion_matrix": "plot",
    "plot_history": "plot",
    "plot_runs": "plot",
    "show_images": "plot",
    "linear_probe_accuracy": "probe",
    "train_folder": "project",
    "History": "train",
    "create_optimizer": "train",
    "evaluate": "train",
    "fit": "train",
    "get_device": "train",
    "predict": "train",
    "seed_everything": "train",
}
"""Public names and the module that defines each."""


def __getattr__(name: str):
    """Import a module or a public name on first use (PEP 562)."""
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _ATTRIBUTES:
        module = importlib.import_module(f".{_ATTRIBUTES[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'tlutils' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES, *_ATTRIBUTES})


__version__ = "0.1.0"

__all__ = [
    "diagnose",
    "scan_folder",
    "train_folder",
    "predict_images",
    "evaluate_folder",
    "save_model",
    "load_model",
    "export_model",
    "load_exported",
    "is_split_folder",
    "DATASETS",
    "DEFAULT_MODEL",
    "History",
    "ImageFolder",
    "cases",
    "checks",
    "finetune",
    "layers",
    "probe",
    "reference",
    "shift",
    "smoke",
    "stages",
    "checkpoint",
    "cli",
    "diagnosis",
    "project",
    "inference",
    "rule",
    "create_optimizer",
    "linear_probe_accuracy",
    "plot_runs",
    "stage_features",
    "classes_of",
    "count_parameters",
    "create_model",
    "data_config",
    "dataset_dir",
    "evaluate",
    "extract_features",
    "feature_extractor",
    "features_dataset",
    "fit",
    "freeze",
    "get_device",
    "get_head",
    "glue",
    "imagenet_classes",
    "lite0_state_dict",
    "load_dataset",
    "load_image_folder",
    "load_rgb",
    "verify_mirror",
    "create_loader",
    "create_transform",
    "plot_confusion_matrix",
    "plot_history",
    "predict",
    "replace_head",
    "seed_everything",
    "set_batchnorm_eval",
    "show_images",
    "stratified_split",
    "subsample_per_class",
    "targets_of",
    "unfreeze",
]
