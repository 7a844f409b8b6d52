"""The reference budget of issue 23: fine-tuning at a budget where it can work (chapters 2-4).

Runs the course's own code (tlutils.cases, tlutils.finetune, tlutils.features, tlutils.fit)
with the reference settings below, and appends every finished run to
``results/reference.jsonl`` at once, with its provenance and which validation images it got
right (tlutils.reference). Runs already in the file are skipped: stop it any time and start
it again to resume. Runs are ordered so that the most informative finish first: the probes,
then seed 0 of every trained arm (chapter 3's whole body first), then the other seeds.

    python scripts/reference_run.py              # run (or resume) everything
    python scripts/reference_run.py --list       # what is done, what is left
    python scripts/reference_run.py --only ch3   # arms whose name contains 'ch3'
    python scripts/reference_run.py --commit     # also git-commit the file after each run

One thread by default (``--threads``): the reference is sized for one core of a 2-core CPU.

The recipe (every trained arm): the warm-up head is the linear probe (C chosen on the
training features, ``cases.probe_head``), then the chosen stages train with AdamW, weight
decay 0.05, a cosine schedule after a linear warm-up of 10% of the steps, batches of 32,
random resized crops and flips, BatchNorm statistics fixed (chapter 4), for a few epochs.
The learning rate is chosen on a split of the training images (``cases.selection_split``:
fit on two thirds, score on one third; seed 0) from a grid widened until its best rate is
inside it, ties to the larger rate. Arms:

* chapter 3, case 3 (flowers) and case 4 (EuroSAT upsampled to 128 px), the large set of
  chapter 3 (300 images per class), the whole validation split: linear probe, frozen cut
  probe (stage chosen on training images, ``cases.choose_stage``), the top 3 stages
  fine-tuned, the whole body fine-tuned;
* chapter 4, flowers at 160 px, 80 images per class (the notebook's FULL size): LP (the
  probe), FT (a random head, the whole body from the first step), LP-FT (the probe's head,
  then the whole body), scored on the clean validation split (ID) and on the same images
  under the notebook's corruptions at severity 3 (OOD);
* chapter 2, ants and bees at 96 px (all 244 training images) and EuroSAT at 64 px (25
  per class, as its notebook): the network from scratch with its own learning-rate trial
  (the same recipe, BatchNorm statistics updated, 30 epochs), against the probes (96 and
  224 px; 128 px), scored on the whole validation split.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch load BLAS
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import Dataset, Subset, TensorDataset  # noqa: E402
from torchvision import transforms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlutils as tl  # noqa: E402
from tlutils import cases, reference  # noqa: E402
from tlutils import finetune as ft  # noqa: E402
from tlutils.features import fit_probe  # noqa: E402

RESULTS = ROOT / "results" / "reference.jsonl"
SEEDS = (0, 1, 2)
BATCH = 32
RECIPE: dict[str, Any] = {
    "opt": "adamw",
    "weight_decay": 0.05,
    "schedule": "cosine",
    "warmup": 0.1,  # of the steps
    "batch": BATCH,
    "augment": "random resized crop (0.5-1) + flip",
    "decay": 1.0,  # every stage at the same rate
    "head": "probe",
}
CH3 = {"per_class": cases.N_LARGE, "image_size": 128, "epochs": 3}
CH3_DATA = {"flowers": 3, "eurosat": 4}  # dataset -> case
CH3_GRIDS = {"top3": (3e-4, 1e-3, 3e-3), "whole_body": (1e-4, 3e-4, 1e-3)}
CH4 = {"dataset": "flowers", "per_class": 80, "image_size": 160, "epochs": 6}
CH4_GRIDS = {"FT": (1e-4, 3e-4, 1e-3), "LP-FT": (3e-5, 1e-4, 3e-4)}
SEVERITY = 3  # of chapter 4's corruptions
CH2 = {  # chapter 2's two scratch arms: dataset -> sizes (None: every image)
    "hymenoptera": {
        "image_size": 96,
        "epochs": 30,
        "per_class": None,
        "probes": (96, 224),
    },
    "eurosat": {"image_size": 64, "epochs": 30, "per_class": 25, "probes": (128,)},
}
CH2_GRID = (1e-3, 3e-3, 1e-2)
DEVICE = torch.device("cpu")
SMOKE_VAL: int | None = None  # validation images per class with --smoke (else all)


def smoke() -> None:
    """Tiny sizes that only check that every arm runs (``--smoke``; never the reference)."""
    global SMOKE_VAL
    SMOKE_VAL = 3
    CH3.update(per_class=12, epochs=1)
    CH4.update(per_class=12, epochs=1)
    for sizes in CH2.values():
        sizes.update(epochs=1)
    RECIPE.update(smoke=True)


def digest(dataset: Dataset) -> str:
    """A short hash of a dataset's files (class folder/name) and labels, in its order."""
    indices: list[int] = list(range(len(dataset)))  # type: ignore[arg-type]
    while isinstance(dataset, Subset):
        indices = [int(dataset.indices[i]) for i in indices]
        dataset = dataset.dataset
    samples = dataset.samples  # type: ignore[attr-defined]
    h = hashlib.sha256()
    for i in indices:
        path, label = samples[i]
        h.update(f"{'/'.join(Path(path).parts[-2:])}:{label};".encode())
    return h.hexdigest()[:12]


def val_split(whole: Dataset, per_class: int | None) -> Subset:
    """The whole validation split in its order (or, for ``--smoke``, a few per class)."""
    if per_class:
        return tl.subsample_per_class(whole, per_class, seed=0)
    return Subset(whole, range(len(whole)))  # type: ignore[arg-type]


def loader(dataset: Dataset, seed: int | None = None, batch: int = BATCH):
    """A seeded shuffled training loader (``seed``) or an ordered scoring loader."""
    if seed is None:
        return tl.create_loader(dataset, batch_size=128, num_workers=0)
    return tl.create_loader(
        dataset, batch_size=batch, shuffle=True, num_workers=0, seed=seed
    )


def correct_on(model: nn.Module, dataset: Dataset) -> np.ndarray:
    """Which images of ``dataset`` the model gets right, in the dataset's order."""
    logits, labels = tl.predict(model, loader(dataset), device=DEVICE)
    return (logits.argmax(1) == labels).numpy()


def with_head(body: nn.Module, head: nn.Module) -> nn.Module:
    """A copy of the pretrained model with a copy of ``head`` as its classifier."""
    model = copy.deepcopy(body)
    tl.replace_head(model, head.out_features, head=copy.deepcopy(head))
    return model


def recipe(
    model: nn.Module,
    train: Dataset,
    stages: list[int] | None,
    epochs: int,
    lr: float,
    seed: int,
) -> nn.Module:
    """The reference recipe's phase 2 (chapter 4's fine_tune with the schedule)."""
    tl.seed_everything(seed)
    batches = loader(train, seed)
    ft.fine_tune(
        model,
        batches,
        None,
        epochs=epochs,
        lr=lr,
        decay=RECIPE["decay"],
        stages=stages,
        opt=RECIPE["opt"],
        weight_decay=RECIPE["weight_decay"],
        bn_stats="fixed",
        keep_best=False,
        schedule=RECIPE["schedule"],
        warmup_steps=max(1, round(RECIPE["warmup"] * epochs * len(batches))),
        device=DEVICE,
        progress=False,
    )
    return model.eval()


@dataclasses.dataclass
class Context:
    """Everything loaded once: the pretrained model, the cells, their features."""

    runner: reference.Runner
    only: str
    lite0: nn.Module = dataclasses.field(default_factory=tl.create_model)
    memo: dict[str, Any] = dataclasses.field(default_factory=dict)

    def once(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self.memo:
            start = time.perf_counter()
            self.memo[name] = make()
            print(f"  [{name}: {time.perf_counter() - start:.0f} s]", flush=True)
        return self.memo[name]

    def wanted(self, arm: str) -> bool:
        return self.only in arm


# ----------------------------------------------------------------------------- chapter 3
def ch3_cell(ctx: Context, name: str) -> dict[str, Any]:
    """Chapter 3's large set of ``name`` at 128 px, the whole validation split, the
    selection split; ``features(ctx, c)`` computes (or reads) their features."""

    def make() -> dict[str, Any]:
        config = tl.data_config(ctx.lite0)
        size = CH3["image_size"]
        cell = cases.load_cell_data(
            name, config, image_size=size, n_large=CH3["per_class"]
        )
        eval_tf = tl.create_transform(config, image_size=size)
        whole_val = tl.load_dataset(name, eval_tf, eval_tf).val
        cell = dataclasses.replace(cell, val=val_split(whole_val, SMOKE_VAL))
        y = np.asarray(tl.targets_of(cell.large))
        fit, held = cases.selection_split(cell, y, "large")
        return {
            "name": f"ch3 {name}",
            "cell": cell,
            "fit": fit,
            "held": held,
            "data": f"{digest(cell.large)}/{digest(cell.val)}",
        }

    return ctx.once(f"ch3 {name} data", make)


def features(ctx: Context, c: dict[str, Any]) -> dict[str, Any]:
    """Pooled features of every stage of ``c``'s cell (cached on disk by tlutils)."""
    cell = c["cell"]
    return ctx.once(
        f"{c['name']} features",
        lambda: cases.cell_stage_features(ctx.lite0, cell, device=DEVICE),
    )


def ch3_settings(name: str, arm: str, data: str) -> dict[str, Any]:
    settings = {"chapter": 3, "dataset": name, **CH3, "data": data, "arm": arm}
    if arm in CH3_GRIDS:
        return {**settings, **RECIPE}
    del settings["epochs"]  # a probe has none
    return settings


def ch3_probes(ctx: Context, name: str) -> None:
    """Linear probe (final features) and the cut chosen on training images."""
    fields = {"chapter": 3, "case": CH3_DATA[name], "dataset": name}
    c = ch3_cell(ctx, name)
    for arm in ("linear_probe", "cut_probe"):
        if not ctx.wanted(f"ch3/{name}/{arm}"):
            continue

        def work(arm: str = arm) -> dict[str, Any]:
            f = features(ctx, c)
            y = f["train_y"]
            stage, scores = 8, {}
            if arm == "cut_probe":
                stage, scores = cases.choose_stage(f["train"], y, c["fit"], c["held"])
            probe = fit_probe(f["train"][stage], y)
            right = probe.predict(np.asarray(f["val"][stage])) == f["val_y"]
            return {
                "correct": right,
                "stage": stage,
                "probe_C": float(probe[-1].C),
                "stage_scores": {str(s): v for s, v in scores.items()},
            }

        ctx.runner.run(
            f"ch3/{name}/{arm}", ch3_settings(name, arm, c["data"]), 0, work, **fields
        )


def ch3_trained(ctx: Context, name: str, arm: str, seeds: tuple[int, ...]) -> None:
    """Top 3 stages or the whole body, from the probe's head, seeds after the lr trial."""
    full = f"ch3/{name}/{arm}"
    if not ctx.wanted(full):
        return
    fields = {"chapter": 3, "case": CH3_DATA[name], "dataset": name}
    c = ch3_cell(ctx, name)
    stages = cases.top_stages(3) if arm == "top3" else None
    settings = ch3_settings(name, arm, c["data"])

    def head_on(rows: np.ndarray) -> nn.Linear:
        f = features(ctx, c)
        return cases.probe_head(f["train"][8][rows], f["train_y"][rows], C=None)

    def trial(lr: float) -> dict[str, Any]:
        cell, fit, held = c["cell"], c["fit"], c["held"]
        model = with_head(ctx.lite0, head_on(fit))
        recipe(model, Subset(cell.large_augmented, fit), stages, CH3["epochs"], lr, 0)
        return {"correct": correct_on(model, Subset(cell.large, held))}

    lr, scores, edge = reference.choose_lr(
        ctx.runner, full, settings, CH3_GRIDS[arm], trial, **fields
    )
    report_lr(full, lr, scores, edge)
    if lr is None:
        return
    for seed in seeds:

        def work(seed: int = seed) -> dict[str, Any]:
            cell = c["cell"]
            rows = np.arange(len(cell.large))
            head = ctx.once(f"ch3 {name} probe head", lambda: head_on(rows))
            model = with_head(ctx.lite0, head)
            start = time.perf_counter()
            recipe(model, cell.large_augmented, stages, CH3["epochs"], lr, seed)
            took = time.perf_counter() - start
            return {"correct": correct_on(model, cell.val), "train_seconds": took}

        ctx.runner.run(
            full,
            {**settings, "lr": lr},
            seed,
            work,
            lr_trials={str(k): v for k, v in scores.items()},
            lr_at_edge=edge,
            **fields,
        )


def report_lr(arm: str, lr: float | None, scores: dict, edge: bool) -> None:
    tried = ", ".join(f"{k:g}: {v:.3f}" for k, v in sorted(scores.items()))
    note = " (still at the grid's edge)" if edge and lr is not None else ""
    print(f"{arm}: lr {lr if lr is None else f'{lr:g}'}{note}; trials {tried}")


# ----------------------------------------------------------------------------- chapter 4
def ch4_data(ctx: Context) -> dict[str, Any]:
    """Chapter 4's flowers (160 px, crop 1.0, 80 per class), the clean validation split,
    the selection split; :func:`ch4_ood` makes the corrupted validation images."""

    def make() -> dict[str, Any]:
        config = dict(tl.data_config(ctx.lite0), crop_pct=1.0)
        size = CH4["image_size"]
        cell = cases.load_cell_data(
            "flowers", config, image_size=size, n_large=CH4["per_class"]
        )
        transform = tl.create_transform(config, image_size=size)
        whole_val = tl.load_dataset("flowers", transform, transform).val
        cell = dataclasses.replace(cell, val=val_split(whole_val, SMOKE_VAL))
        y = np.asarray(tl.targets_of(cell.large))
        fit, held = cases.selection_split(cell, y, "large")
        return {
            "name": "ch4 flowers",
            "cell": cell,
            "transform": transform,
            "fit": fit,
            "held": held,
            "data": f"{digest(cell.large)}/{digest(cell.val)}/severity {SEVERITY}",
        }

    return ctx.once("ch4 data", make)


def ch4_ood(ctx: Context, d: dict[str, Any]) -> TensorDataset:
    """The validation images under chapter 4's corruptions, as its notebook makes them:
    each image gets one of the five corruptions, each corruption as many images."""

    def make() -> TensorDataset:
        transform = d["transform"]
        raw = transforms.Compose(transform.transforms[:-1])  # no Normalize
        normalize = transform.transforms[-1]
        raw_val = val_split(tl.load_dataset("flowers", raw, raw).val, SMOKE_VAL)
        clean = torch.stack([image for image, _ in raw_val])
        names = list(tl.shift.CORRUPTIONS)
        order = torch.randperm(len(clean), generator=torch.Generator().manual_seed(0))
        which = torch.empty(len(clean), dtype=torch.long)
        which[order] = torch.arange(len(clean)) % len(names)
        corrupted = clean.clone()
        for k, name in enumerate(names):
            picked = which == k
            corrupted[picked] = tl.shift.corrupt(clean[picked], name, SEVERITY, seed=k)
        labels = torch.tensor(tl.targets_of(raw_val))
        assert labels.tolist() == tl.targets_of(d["cell"].val)  # same images, order
        return TensorDataset(normalize(corrupted), labels)

    return ctx.once("ch4 corrupted validation images", make)


def ch4_arms(ctx: Context, seeds: tuple[int, ...], arms: tuple[str, ...]) -> None:
    """LP (the probe), FT (random head), LP-FT (probe head): ID and OOD."""
    fields = {"chapter": 4, "dataset": "flowers"}
    d = ch4_data(ctx)

    def head_on(rows: np.ndarray) -> nn.Linear:
        f = features(ctx, d)
        return cases.probe_head(f["train"][8][rows], f["train_y"][rows], C=None)

    def model_for(arm: str, rows: np.ndarray, seed: int) -> nn.Module:
        if arm == "FT":
            tl.seed_everything(seed)
            head = nn.Linear(ctx.lite0.get_classifier().in_features, 5)
            return with_head(ctx.lite0, head)
        return with_head(ctx.lite0, head_on(rows))

    for arm in arms:
        full = f"ch4/{arm}"
        if not ctx.wanted(full):
            continue
        settings = {"chapter": 4, **CH4, "data": d["data"], "arm": arm}
        if arm == "LP":
            lr, scores, edge = 0.0, {}, False
            del settings["epochs"]  # the probe has none
        else:
            settings.update(RECIPE, head="probe" if arm == "LP-FT" else "random")

            def trial(lr: float, arm: str = arm) -> dict[str, Any]:
                cell, fit, held = d["cell"], d["fit"], d["held"]
                model = model_for(arm, fit, 0)
                train = Subset(cell.large_augmented, fit)
                recipe(model, train, None, CH4["epochs"], lr, 0)
                return {"correct": correct_on(model, Subset(cell.large, held))}

            lr, scores, edge = reference.choose_lr(
                ctx.runner, full, settings, CH4_GRIDS[arm], trial, **fields
            )
            report_lr(full, lr, scores, edge)
            if lr is None:
                continue
        for seed in seeds if arm != "LP" else (0,):

            def work(seed: int = seed, arm: str = arm, lr: float = lr) -> dict:
                cell = d["cell"]
                model = model_for(arm, np.arange(len(cell.large)), seed)
                took = 0.0
                if arm != "LP":
                    start = time.perf_counter()
                    recipe(model, cell.large_augmented, None, CH4["epochs"], lr, seed)
                    took = time.perf_counter() - start
                return {
                    "correct": correct_on(model, cell.val),
                    "correct_ood": correct_on(model, ch4_ood(ctx, d)),
                    "train_seconds": took,
                }

            extra = {"lr": lr} if arm != "LP" else {}
            ctx.runner.run(
                full,
                {**settings, **extra},
                seed,
                work,
                lr_trials={str(k): v for k, v in scores.items()},
                lr_at_edge=edge,
                **fields,
            )


# ----------------------------------------------------------------------------- chapter 2
def ch2_data(ctx: Context, name: str) -> dict[str, Any]:
    """Chapter 2's training images of ``name`` (augmented, at the scratch size; all, or
    ``per_class`` of them as its notebook takes) and the whole validation split."""
    sizes = CH2[name]

    def make() -> dict[str, Any]:
        config = tl.data_config(ctx.lite0)
        size = sizes["image_size"]
        train_tf = tl.create_transform(config, train=True, image_size=size)
        eval_tf = tl.create_transform(config, image_size=size)
        data = tl.load_dataset(name, train_tf, eval_tf)
        plain = tl.load_dataset(name, eval_tf, eval_tf)
        rows = list(range(len(data.train)))
        if sizes["per_class"]:
            rows = tl.subsample_per_class(
                data.train, sizes["per_class"], seed=0
            ).indices
        train, plain_train = Subset(data.train, rows), Subset(plain.train, rows)
        val = val_split(data.val, SMOKE_VAL if name == "eurosat" else None)
        fit, held = tl.stratified_split(
            tl.targets_of(train), val_fraction=1 / 3, seed=0
        )
        return {
            "train": train,
            "plain_train": plain_train,
            "val": val,
            "fit": np.asarray(fit),
            "held": np.asarray(held),
            "tag": f"{digest(train)}/{digest(val)}",
        }

    return ctx.once(f"ch2 {name} data", make)


def ch2_arms(ctx: Context, name: str, seeds: tuple[int, ...], probes: bool) -> None:
    """The probes (pretrained features, C chosen on the training features); the network
    from scratch with its own learning-rate trial (the recipe, BatchNorm updated)."""
    fields = {"chapter": 2, "dataset": name}
    sizes = CH2[name]
    d = ch2_data(ctx, name)
    config = tl.data_config(ctx.lite0)
    for size in sizes["probes"] if probes else ():
        arm = f"ch2/{name}/probe_{size}"
        if not ctx.wanted(arm):
            continue

        def probe_work(size: int = size) -> dict[str, Any]:
            tf = tl.create_transform(config, image_size=size)
            data = tl.load_dataset(name, tf, tf)
            train = Subset(data.train, d["train"].indices)
            val = Subset(data.val, d["val"].indices)
            body = tl.feature_extractor(ctx.lite0)
            x, y = tl.extract_features(body, train, device=DEVICE, progress=False)
            xv, yv = tl.extract_features(body, val, device=DEVICE, progress=False)
            probe = fit_probe(x, y)
            return {
                "correct": probe.predict(xv.numpy()) == yv.numpy(),
                "probe_C": float(probe[-1].C),
            }

        settings = {"chapter": 2, "image_size": size, "data": d["tag"], "arm": arm}
        ctx.runner.run(arm, settings, 0, probe_work, **fields)
    arm = f"ch2/{name}/scratch"
    if not ctx.wanted(arm):
        return
    settings = {"chapter": 2, "dataset": name, "data": d["tag"], "arm": arm}
    settings.update({k: v for k, v in sizes.items() if k != "probes"})
    settings.update(RECIPE)
    settings.update(head="random", bn_stats="update_unfrozen", decay=None)
    n_classes = len(set(tl.targets_of(d["val"])))

    def scratch(train: Dataset, lr: float, seed: int) -> nn.Module:
        tl.seed_everything(seed)
        model = cases.create_strategy_model("scratch", n_classes)
        batches = loader(train, seed)
        epochs = sizes["epochs"]
        tl.fit(
            model,
            batches,
            epochs=epochs,
            lr=lr,
            opt=RECIPE["opt"],
            weight_decay=RECIPE["weight_decay"],
            schedule=RECIPE["schedule"],
            warmup_steps=max(1, round(RECIPE["warmup"] * epochs * len(batches))),
            bn_stats="update_unfrozen",
            device=DEVICE,
            progress=False,
        )
        return model.eval()

    def trial(lr: float) -> dict[str, Any]:
        model = scratch(Subset(d["train"], d["fit"]), lr, 0)
        return {"correct": correct_on(model, Subset(d["plain_train"], d["held"]))}

    lr, scores, edge = reference.choose_lr(
        ctx.runner, arm, settings, CH2_GRID, trial, **fields
    )
    report_lr(arm, lr, scores, edge)
    if lr is None:
        return
    for seed in seeds:

        def work(seed: int = seed) -> dict[str, Any]:
            start = time.perf_counter()
            model = scratch(d["train"], lr, seed)
            took = time.perf_counter() - start
            return {"correct": correct_on(model, d["val"]), "train_seconds": took}

        ctx.runner.run(
            arm,
            {**settings, "lr": lr},
            seed,
            work,
            lr_trials={str(k): v for k, v in scores.items()},
            lr_at_edge=edge,
            **fields,
        )


# ------------------------------------------------------------------------------- order
def plan(ctx: Context) -> Iterator[str]:
    """Every step in order: the probes, seed 0 of every arm, then the other seeds."""
    for name in CH3_DATA:
        yield f"ch3 {name} probes"
        ch3_probes(ctx, name)
    for seeds in (SEEDS[:1], SEEDS[1:]):
        for arm in ("whole_body", "top3"):
            for name in CH3_DATA:
                yield f"ch3 {name} {arm} seeds {seeds}"
                ch3_trained(ctx, name, arm, seeds)
        yield f"ch4 seeds {seeds}"
        ch4_arms(ctx, seeds, ("LP", "LP-FT", "FT"))
        for name in CH2:
            yield f"ch2 {name} seeds {seeds}"
            ch2_arms(ctx, name, seeds, probes=seeds == SEEDS[:1])


def git_committer(path: Path) -> Callable[[dict[str, Any]], None]:
    """After each run: commit the results file alone (waits for other git commands)."""

    def commit(row: dict[str, Any]) -> None:
        git = ROOT / ".git"
        busy = ("rebase-merge", "rebase-apply", "MERGE_HEAD", "CHERRY_PICK_HEAD")
        relative = str(path.relative_to(ROOT))
        message = (
            f"results/reference: {row['arm']} {row['kind']} seed {row['seed']}, "
            f"accuracy {row['accuracy']:.4f} ({row['seconds']:.0f} s)"
        )
        for _ in range(30):
            if not (git / "index.lock").exists() and not any(
                (git / b).exists() for b in busy
            ):
                add = subprocess.run(["git", "add", relative], cwd=ROOT)
                done = add.returncode == 0 and (
                    subprocess.run(
                        ["git", "commit", "-q", "-m", message, "--", relative],
                        cwd=ROOT,
                    ).returncode
                    == 0
                )
                if done:
                    return
            time.sleep(10)
        print("  (could not commit the results file; it is safe on disk)", flush=True)

    return commit


PAIRS = [  # (arm A, arm B): the comparisons --table prints by the verdict rule
    *(
        (f"ch3/{name}/{a}", f"ch3/{name}/{b}")
        for name in CH3_DATA
        for a, b in [
            ("whole_body", "linear_probe"),
            ("whole_body", "cut_probe"),
            ("top3", "linear_probe"),
            ("whole_body", "top3"),
            ("cut_probe", "linear_probe"),
        ]
    ),
    ("ch4/LP-FT", "ch4/LP"),
    ("ch4/FT", "ch4/LP"),
    ("ch4/LP-FT", "ch4/FT"),
    ("ch2/hymenoptera/probe_96", "ch2/hymenoptera/scratch"),
    ("ch2/hymenoptera/probe_224", "ch2/hymenoptera/scratch"),
    ("ch2/eurosat/probe_128", "ch2/eurosat/scratch"),
]


def print_table(rows: list[dict[str, Any]]) -> None:
    """Every arm's mean and interval, then the verdicts of :data:`PAIRS` (``--table``)."""
    import pandas as pd

    from tlutils.verdict import compare

    pd.set_option("display.width", 200)
    table = reference.summary(rows)
    print(table.drop(columns=["machine"]).round(4).to_string(index=False))
    print("machines:", ", ".join(sorted(set(table["machine"]))))
    ood = reference.summary(rows, "correct_ood")
    if len(ood):
        print("\nchapter 4, corrupted validation images (OOD):")
        print(ood[["arm", "runs", "accuracy", "95% interval"]].round(4).to_string())
    print("\nverdicts (the course's rule):")
    for arm, base in PAIRS:
        for field in ("correct", "correct_ood"):
            try:
                a = reference.runs_of(rows, arm, field)
                b = reference.runs_of(rows, base, field)
            except (ValueError, KeyError):
                continue
            where = " (OOD)" if field == "correct_ood" else ""
            print(f"  {compare(a, b).sentence(arm + where, base + where)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--only", default="", help="arms whose name contains this")
    parser.add_argument("--list", action="store_true", help="show done and left")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--commit", action="store_true", help="git-commit each run")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a check")
    parser.add_argument("--table", action="store_true", help="summarise the file")
    args = parser.parse_args(argv)
    if args.table:
        print_table(reference.load_reference(args.results))
        return 0
    if args.smoke:
        smoke()
    torch.set_num_threads(args.threads)
    provenance = {"commit": reference.git_commit(ROOT), "machine": reference.machine()}
    runner = reference.Runner(
        args.results,
        provenance,
        dry=args.list,
        on_append=git_committer(args.results.resolve()) if args.commit else None,
        log=lambda text: print(text, flush=True),
    )
    ctx = Context(runner, args.only)
    print(f"{len(runner.done)} runs in {args.results}", flush=True)
    for step in plan(ctx):
        print(f"== {step}", flush=True)
    if args.list:
        print(
            f"\nleft (at least; trials decide what follows them): {len(runner.missing)}"
        )
        for key in runner.missing:
            print("  ", key)
    else:
        print(
            f"done: {runner.ran} new runs, {len(runner.done)} in the file", flush=True
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
