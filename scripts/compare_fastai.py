"""Side by side on ants/bees (chapter 5): ``tlutils train`` against fastai's
``fine_tune`` and the PyTorch tutorial's recipe.

Every arm starts from the same ImageNet EfficientNet-Lite0 weights (``tl.create_model``),
trains on hymenoptera's ``train/`` at 160 px and is scored by the same code
(``tlutils.evaluate_folder``, one centre crop) on ``val/``; each arm that fine-tunes
gets 8 epochs. Two seeds per arm; each arm is compared with ``tlutils train`` (default
settings) by the course's verdict rule over seeds and images.

- ``tlutils train``: the command with its defaults (``--strategy auto``), and with
  ``--strategy fine_tune --epochs 8``;
- fastai 2.8 ``Learner.fine_tune(8)``: one frozen epoch, then 8 unfrozen, one-cycle,
  its default base rate, ``aug_transforms``;
- the PyTorch tutorial ("Transfer learning for computer vision"): SGD 0.001 with
  momentum 0.9, the rate divided by 10 every 7 epochs, batch 4, the whole network
  trained, 8 epochs.

fastai is not a course dependency. Install it beside the course's torch (no newer torch)::

    python -m venv --system-site-packages /tmp/fastvenv
    /tmp/fastvenv/bin/pip install --no-deps fastai==2.8.12
    /tmp/fastvenv/bin/pip install fastcore fasttransform fastprogress fastdownload \\
        'plum-dispatch<2.10'
    /tmp/fastvenv/bin/python scripts/compare_fastai.py

Without fastai the fastai arm is skipped. Seconds are printed, not asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import tlutils as tl
from tlutils.checkpoint import TrainedModel, trained_model
from tlutils.cli import main as tlutils_cli
from tlutils.verdict import compare

IMAGE_SIZE = 160
EPOCHS = 8


def run_tlutils(root: Path, out: Path, seed: int, extra: list[str]) -> TrainedModel:
    """``tlutils train`` as a user runs it; the saved model."""
    argv = ["train", str(root), "--out", str(out), "--seed", str(seed), "--quiet"]
    if tlutils_cli([*argv, "--image-size", str(IMAGE_SIZE), *extra]) != 0:
        raise RuntimeError(f"tlutils train failed: {' '.join(argv + extra)}")
    return tl.load_model(out)


def run_fastai(root: Path, seed: int) -> TrainedModel:
    """fastai's ``fine_tune`` on the same weights, split and size."""
    from fastai.vision.all import (
        ImageDataLoaders,
        Learner,
        Normalize,
        Resize,
        accuracy,
        aug_transforms,
        set_seed,
    )

    set_seed(seed, reproducible=True)
    config = tl.data_config(tl.create_model(num_classes=2))
    dls = ImageDataLoaders.from_folder(
        root,
        train="train",
        valid="val",
        seed=seed,
        bs=32,
        num_workers=0,
        item_tfms=Resize(int(IMAGE_SIZE / 0.875)),
        batch_tfms=[
            *aug_transforms(size=IMAGE_SIZE),
            Normalize.from_stats(config["mean"], config["std"]),
        ],
    )
    model = tl.create_model(num_classes=len(dls.vocab))

    def splitter(m: nn.Module) -> list[list[nn.Parameter]]:
        head = list(m.get_classifier().parameters())
        ids = {id(p) for p in head}
        return [[p for p in m.parameters() if id(p) not in ids], head]

    learn = Learner(dls, model, splitter=splitter, metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(EPOCHS)
    return trained_model(
        learn.model.cpu().eval(), list(dls.vocab), "tf_efficientnet_lite0", IMAGE_SIZE
    )


def run_tutorial(root: Path, seed: int) -> TrainedModel:
    """The PyTorch tutorial's fine-tuning recipe, on the same weights and size."""
    tl.seed_everything(seed)
    model = tl.create_model(num_classes=2)
    config = tl.data_config(model)
    train = tl.data.ImageFolder(
        root / "train", tl.create_transform(config, train=True, image_size=IMAGE_SIZE)
    )
    loader = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(EPOCHS):
        model.train()
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        scheduler.step()
    return trained_model(
        model.eval(), train.classes, "tf_efficientnet_lite0", IMAGE_SIZE
    )


def kept(trained: TrainedModel) -> str:
    """What ``tlutils train`` saved, in words (empty for the other arms)."""
    h = trained.history
    if "strategy" not in h:
        return ""
    if h["strategy"] != "fine_tune":
        return f"; saved: the {h['strategy'].replace('_', ' ')} (no fine-tuning)"
    why = h.get("fine_tune_skipped") or h.get("fine_tune_not_kept")
    if why:
        return f"; saved: the probe ({why.split(':')[0]})"
    lr = h.get("recipe", {}).get("lr", "-")
    return f"; saved: a kept fine-tune (stage {h['stage']}, lr {lr})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = tl.dataset_dir("hymenoptera")
    arms = {
        "tlutils train": lambda s, out: run_tlutils(root, out, s, []),
        "tlutils train --strategy fine_tune --epochs 8": lambda s, out: run_tlutils(
            root, out, s, ["--strategy", "fine_tune", "--epochs", "8"]
        ),
        "fastai fine_tune(8)": lambda s, out: run_fastai(root, s),
        "PyTorch tutorial recipe": lambda s, out: run_tutorial(root, s),
    }
    try:
        import fastai  # noqa: F401
    except ImportError:
        print("fastai is not installed: its arm is skipped (see this script's help)")
        del arms["fastai fine_tune(8)"]
    correct: dict[str, list[np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in arms.items():
            for seed in args.seeds:
                start = time.perf_counter()
                trained = run(seed, Path(tmp) / f"model{seed}.pt")
                ev = tl.evaluate_folder(trained, root)
                hit = np.asarray(ev.true) == np.asarray(ev.predicted)
                correct.setdefault(name, []).append(hit)
                print(
                    f"{name}, seed {seed}: accuracy {ev.accuracy:.3f} on {len(hit)} "
                    f"images ({time.perf_counter() - start:.0f} s){kept(trained)}",
                    flush=True,
                )
    base = "tlutils train"
    print(f"\n{'arm':58s} mean accuracy  against {base} (verdict rule)")
    for name, runs in correct.items():
        mean = np.mean([r.mean() for r in runs])
        said = "" if name == base else compare(runs, correct[base]).sentence(name, base)
        print(f"{name:58s} {mean:8.1%}      {said}")


if __name__ == "__main__":
    main()
