"""tlutils: the helper package of the course book *Transfer Learning with PyTorch*.

Each module holds one idea; every function's docstring names the chapter that teaches it.

* :mod:`tlutils.models`: pretrained models (offline EfficientNet-Lite0), heads, freezing.
* :mod:`tlutils.data`: the course datasets, offline mirror, splits, transforms, loaders.
* :mod:`tlutils.train`: the one training loop (``fit``), optimisers, evaluation, device, seeding.
* :mod:`tlutils.stages`: one numbering of the stages of a network (0 = stem ... 8 = head conv).
* :mod:`tlutils.features`: frozen-backbone features, extracted once and cached; linear probes.
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
* :mod:`tlutils.checkpoint`: save, load and export a trained model (chapter 5).
* :mod:`tlutils.cli`: the ``tlutils diagnose | train | predict`` command (chapter 5).
* :mod:`tlutils.book`: ``glue`` measured numbers into the book's prose.
* :mod:`tlutils.smoke`: the test-only cap under which the FULL smoke test runs the notebooks.
* :mod:`tlutils.checks`: self-checks for the hands-on exercises.
"""

from . import (
    cases,
    checkpoint,
    checks,
    cli,
    diagnosis,
    finetune,
    inference,
    layers,
    project,
    reference,
    rule,
    shift,
    smoke,
    stages,
)
from .book import glue
from .checkpoint import export_model, load_exported, load_model, save_model
from .data import (
    DATASETS,
    ImageFolder,
    classes_of,
    create_loader,
    create_transform,
    dataset_dir,
    is_split_folder,
    load_dataset,
    load_image_folder,
    load_rgb,
    stratified_split,
    subsample_per_class,
    targets_of,
    verify_mirror,
)
from .diagnosis import diagnose, scan_folder
from .features import (
    extract_features,
    feature_extractor,
    features_dataset,
    linear_probe_accuracy,
    stage_features,
)
from .inference import evaluate_folder, predict_images
from .models import (
    DEFAULT_MODEL,
    count_parameters,
    create_model,
    data_config,
    freeze,
    get_head,
    imagenet_classes,
    lite0_state_dict,
    replace_head,
    set_batchnorm_eval,
    unfreeze,
)
from .plot import plot_confusion_matrix, plot_history, plot_runs, show_images
from .project import train_folder
from .train import (
    History,
    create_optimizer,
    evaluate,
    fit,
    get_device,
    predict,
    seed_everything,
)

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
