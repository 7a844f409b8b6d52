"""The reference budget: the course's evidence, at a budget where fine-tuning can work
(chapters 2-4).

Every trained arm runs the course's one recipe (:data:`tlutils.recipe.REFERENCE`, through
:func:`tlutils.recipe.run`), every probe the one probe (:mod:`tlutils.probe`), every rate
comes from the one chooser (:func:`tlutils.rates.choose_lr`, on a split of the training
images: two thirds train, one third scores, ties to the larger rate). Each finished run is
appended at once to ``results/reference.jsonl`` with its provenance, which validation
images it got right, and the digest of the code that made it (:func:`code_digest`;
``tests/test_reference_fresh.py`` names the arms to re-run when that code changes). Runs
already in the file are skipped: stop it any time and start it again to resume.

    python scripts/reference_run.py              # run (or resume) everything
    python scripts/reference_run.py --list       # what is done, what is left
    python scripts/reference_run.py --only ch4   # arms whose name contains 'ch4'
    python scripts/reference_run.py --commit     # also git-commit the file after each run
    python scripts/reference_run.py --table      # every arm and the verdicts

One thread by default (``--threads``). The arms (:data:`ARMS`), on chapter 3's large sets
(300 images per class, 128 px, the whole validation split):

* EuroSAT (case 4): the linear probe, the frozen cut probe (stage chosen on the selection
  split), the recipe on the top 3 stages and on the whole body (chapter 3); the whole body
  from a random head with and without the 10% learning-rate warm-up, and a random against
  a probe head at the large rate 1e-3 without warm-up (chapter 4: the head's effect and
  the learning rate's, separated); the top 3 stages re-initialised before training
  (co-adaptation, Yosinski et al. 2014) and the first two stages alone (surgical
  fine-tuning, Lee et al. 2023). Chapter 4's arms are also scored on the validation
  images under its corruptions (severity 3, OOD), and their features' linear CKA with the
  pretrained body's is measured (every fifth validation image);
* flowers (case 3): the two probes, the top 3 stages, the whole body;
* chapter 2: the network from scratch (ants and bees at 96 px, all 245 training images;
  EuroSAT at 64 px, 25 per class) with its own rate, BatchNorm statistics updated, 30
  epochs, against the probes (96 and 224 px; 64 px, the same resolution, and 128 px).
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
from torch.utils.data import Dataset, Subset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tlutils as tl  # noqa: E402
from tlutils import cases, reference  # noqa: E402
from tlutils.probe import choose_stage, fit_probe, probe_head  # noqa: E402
from tlutils.recipe import REFERENCE, Recipe  # noqa: E402
from tlutils.recipe import code_digest as recipe_digest  # noqa: E402
from tlutils.recipe import run as run_recipe  # noqa: E402

RESULTS = ROOT / "results" / "reference.jsonl"
SEEDS = (0, 1, 2)
IMAGE_SIZE = 128
PER_CLASS = cases.N_LARGE  # 300
SEVERITY = 3  # of chapter 4's corruptions
CKA_EVERY = 5  # CKA on every fifth validation image
DEVICE = torch.device("cpu")
SMOKE: dict[str, Any] = {}  # --smoke: tiny sizes that only check that every arm runs


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of the reference: its recipe (``None``: a probe), its rate grid (or a fixed
    rate), and what is measured besides the validation accuracy."""

    name: str
    dataset: str
    recipe: Recipe | None = None
    grid: tuple[float, ...] = ()
    fixed_lr: float | None = None
    cut: bool = False  # a probe arm: the frozen cut (True) or the final features
    ood: bool = False  # also scored on the corrupted validation images
    cka: bool = False  # the features' CKA with the pretrained ones (end; epoch 1 too
    # for arms at a fixed rate)
    chapter: int = 3


TOP3 = tuple(cases.top_stages(3))
WHOLE = (1e-4, 3e-4, 1e-3)
ARMS: tuple[Arm, ...] = (
    # chapter 3, case 4, and the arms chapter 4 shares with it
    Arm("ch3/eurosat/linear_probe", "eurosat", ood=True, cka=True),
    Arm("ch3/eurosat/cut_probe", "eurosat", cut=True),
    Arm("ch3/eurosat/whole_body", "eurosat", REFERENCE, WHOLE, ood=True, cka=True),
    Arm("ch3/eurosat/top3", "eurosat", REFERENCE.replace(stages=TOP3), (3e-4, 1e-3, 3e-3)),
    # chapter 4: the head (random or the probe) and the learning-rate warm-up, apart
    Arm("ch4/eurosat/FT", "eurosat", REFERENCE.replace(head="random"), WHOLE,
        ood=True, cka=True, chapter=4),
    Arm("ch4/eurosat/FT_no_lr_warmup", "eurosat",
        REFERENCE.replace(head="random", lr_warmup=0.0), WHOLE, ood=True, cka=True,
        chapter=4),
    Arm("ch4/eurosat/cold_large_lr", "eurosat",
        REFERENCE.replace(head="random", lr_warmup=0.0), fixed_lr=1e-3, ood=True,
        cka=True, chapter=4),
    Arm("ch4/eurosat/warm_large_lr", "eurosat", REFERENCE.replace(lr_warmup=0.0),
        fixed_lr=1e-3, ood=True, cka=True, chapter=4),
    # chapter 3, how many layers: co-adaptation and surgical fine-tuning
    Arm("ch3/eurosat/reinit_top3", "eurosat",
        REFERENCE.replace(stages=TOP3, reinit=TOP3, bn_stats="update_unfrozen"),
        (1e-3, 3e-3, 1e-2)),
    Arm("ch3/eurosat/first2", "eurosat", REFERENCE.replace(stages=(0, 1)),
        (3e-4, 1e-3, 3e-3)),
    # chapter 3, case 3
    Arm("ch3/flowers/linear_probe", "flowers"),
    Arm("ch3/flowers/cut_probe", "flowers", cut=True),
    Arm("ch3/flowers/whole_body", "flowers", REFERENCE, WHOLE),
    Arm("ch3/flowers/top3", "flowers", REFERENCE.replace(stages=TOP3), (3e-4, 1e-3, 3e-3)),
)  # fmt: skip
CASE = {"eurosat": 4, "flowers": 3}
CH2 = {  # chapter 2's two scratch arms: dataset -> sizes (None: every image)
    "hymenoptera": {"image_size": 96, "epochs": 30, "per_class": None, "probes": (96, 224)},
    "eurosat": {"image_size": 64, "epochs": 30, "per_class": 25, "probes": (64, 128)},
}  # fmt: skip
SCRATCH = REFERENCE.replace(head="random", bn_stats="update_unfrozen", epochs=30)
CH2_GRID = (1e-3, 3e-3, 1e-2)


def smoke() -> None:
    """Tiny sizes that only check that every arm runs (``--smoke``; never the reference)."""
    SMOKE.update(per_class=12, val=3, epochs=1)
    for sizes in CH2.values():
        sizes.update(epochs=1)


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


def val_split(whole: Dataset) -> Subset:
    """The whole validation split in its order (or, for ``--smoke``, a few per class)."""
    if SMOKE:
        return tl.subsample_per_class(whole, SMOKE["val"], seed=0)
    return Subset(whole, range(len(whole)))  # type: ignore[arg-type]


@torch.no_grad()
def score(model: nn.Module, dataset: Dataset) -> tuple[np.ndarray, torch.Tensor]:
    """Which images of ``dataset`` the model gets right, in order, and its pooled
    features of them (the head's input), from one pass in eval mode."""
    model = model.to(DEVICE).eval()
    right, pooled = [], []
    for images, labels in tl.create_loader(dataset, batch_size=128, num_workers=0):
        features = model.forward_head(model.forward_features(images), pre_logits=True)
        right.append(model.get_classifier()(features).argmax(1) == labels)
        pooled.append(features)
    return torch.cat(right).numpy(), torch.cat(pooled)


class Corrupted(Dataset):
    """Validation images under chapter 4's corruptions, kept as bytes, normalised when
    read: each image gets one of the five, each corruption as many images."""

    def __init__(self, raw: Dataset, normalize: Callable, severity: int) -> None:
        clean = torch.stack([image for image, _ in raw])
        names = list(tl.shift.CORRUPTIONS)
        order = torch.randperm(len(clean), generator=torch.Generator().manual_seed(0))
        which = torch.empty(len(clean), dtype=torch.long)
        which[order] = torch.arange(len(clean)) % len(names)
        out = clean.clone()
        for k, name in enumerate(names):
            picked = which == k
            out[picked] = tl.shift.corrupt(clean[picked], name, severity, seed=k)
        self.images = (out * 255).round().to(torch.uint8)
        self.labels = torch.tensor(tl.targets_of(raw))
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.normalize(self.images[i].float() / 255), self.labels[i]


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
        return any(part in arm for part in self.only.split(","))


def cell(ctx: Context, name: str) -> dict[str, Any]:
    """Chapter 3's large set of ``name`` at 128 px, the whole validation split, the
    selection split, and (lazily) features, corrupted images and CKA rows."""

    def make() -> dict[str, Any]:
        config = tl.data_config(ctx.lite0)
        per_class = SMOKE.get("per_class", PER_CLASS)
        c = cases.load_cell_data(name, config, image_size=IMAGE_SIZE, n_large=per_class)
        eval_tf = tl.create_transform(config, image_size=IMAGE_SIZE)
        c = dataclasses.replace(
            c, val=val_split(tl.load_dataset(name, eval_tf, eval_tf).val)
        )
        y = np.asarray(tl.targets_of(c.large))
        fit, held = cases.selection_split(c, y, "large")
        return {"name": name, "cell": c, "fit": fit, "held": held, "config": config,
                "data": f"{digest(c.large)}/{digest(c.val)}"}  # fmt: skip

    return ctx.once(f"{name} data", make)


def features(ctx: Context, c: dict[str, Any]) -> dict[str, Any]:
    """Pooled features of every stage of the cell (cached on disk by tlutils)."""
    return ctx.once(
        f"{c['name']} features",
        lambda: cases.cell_stage_features(ctx.lite0, c["cell"], device=DEVICE),
    )


def corrupted(ctx: Context, c: dict[str, Any]) -> Corrupted:
    """The cell's validation images under chapter 4's corruptions."""

    def make() -> Corrupted:
        eval_tf = tl.create_transform(c["config"], image_size=IMAGE_SIZE)
        raw_tf = type(eval_tf)(eval_tf.transforms[:-1])  # no Normalize
        raw = val_split(tl.load_dataset(c["name"], raw_tf, raw_tf).val)
        assert tl.targets_of(raw) == tl.targets_of(c["cell"].val)  # same images
        return Corrupted(raw, eval_tf.transforms[-1], SEVERITY)

    return ctx.once(f"{c['name']} corrupted validation images", make)


def cka_rows(c: dict[str, Any]) -> np.ndarray:
    return np.arange(0, len(c["cell"].val), CKA_EVERY)


def augmented(c: dict[str, Any], recipe: Recipe, rows: np.ndarray | None = None):
    """The cell's large set with the recipe's augmentation (rows of it, or all)."""
    tf = recipe.train_transform(c["config"], IMAGE_SIZE)
    train = tl.load_dataset(c["name"], tf).train
    indices = c["cell"].large.indices
    if rows is not None:
        indices = [indices[r] for r in rows]
    return Subset(train, indices)


def recipe_settings(recipe: Recipe) -> dict[str, Any]:
    """The recipe's choices for a run's settings; its rate is the run's own ``lr``."""
    return {k: v for k, v in recipe.settings().items() if k != "lr"}


def settings_of(arm: Arm, c: dict[str, Any]) -> dict[str, Any]:
    settings = {"arm": arm.name, "dataset": arm.dataset, "image_size": IMAGE_SIZE,
                "per_class": PER_CLASS, "data": c["data"], **SMOKE}  # fmt: skip
    if arm.recipe is not None:
        recipe = arm.recipe.replace(epochs=SMOKE.get("epochs", arm.recipe.epochs))
        settings["recipe"] = recipe_settings(recipe)
    if arm.ood:
        settings["ood"] = f"severity {SEVERITY}"
    return settings


def probe_work(ctx: Context, arm: Arm, c: dict[str, Any]) -> dict[str, Any]:
    """A probe arm: the final features' probe, or the cut chosen on the selection split."""
    f = features(ctx, c)
    y, stage, scores = f["train_y"], tl.stages.NUM_STAGES - 1, {}
    if arm.cut:
        choice = choose_stage(f["train"], y, held_out=(c["fit"], c["held"]))
        stage, scores = choice.stage, choice.scores
    probe = fit_probe(f["train"][stage], y)
    out = {
        "correct": probe.predict(np.asarray(f["val"][stage])) == f["val_y"],
        "stage": stage,
        "probe_C": float(probe[-1].C),
        "stage_scores": {str(s): v for s, v in scores.items()},
    }
    if arm.ood:  # the pretrained body on the corrupted images, the probe's head
        model = copy.deepcopy(ctx.lite0)
        tl.replace_head(
            model, len(c["cell"].classes), head=tl.probe.probe_as_linear(probe)
        )
        out["correct_ood"] = score(model, corrupted(ctx, c))[0]
        out["cka"] = 1.0
    return out


def train_arm(
    ctx: Context, arm: Arm, c: dict[str, Any], lr: float, seed: int,
    rows: np.ndarray | None = None, on_epoch_end: Callable | None = None,
) -> nn.Module:  # fmt: skip
    """The arm's recipe at ``lr`` on the large set (or its ``rows``), from the probe of
    those rows (or a random head), seeded."""
    f = features(ctx, c)
    recipe = arm.recipe.replace(lr=lr, epochs=SMOKE.get("epochs", arm.recipe.epochs))
    rows_ = np.arange(len(c["cell"].large)) if rows is None else rows
    head = None
    if recipe.head == "probe":
        head = ctx.once(
            f"{c['name']} probe head on {len(rows_)} rows",
            lambda: probe_head(f["train"][8][rows_], f["train_y"][rows_]),
        )
    model = copy.deepcopy(ctx.lite0)
    run_recipe(recipe, model, augmented(c, recipe, rows), head=head,
               num_classes=len(c["cell"].classes), seed=seed, device=DEVICE,
               on_epoch_end=on_epoch_end, num_workers=0, progress=False)  # fmt: skip
    return model.eval()


def trained_arm(ctx: Context, arm: Arm, seeds: tuple[int, ...]) -> None:
    """A trained arm: its rate (trials on the selection split, or fixed), then seeds."""
    c = cell(ctx, arm.dataset)
    fields = {"chapter": arm.chapter, "case": CASE[arm.dataset], "dataset": arm.dataset}
    settings = settings_of(arm, c)

    def trial(lr: float) -> dict[str, Any]:
        model = train_arm(ctx, arm, c, lr, 0, rows=c["fit"])
        return {"correct": score(model, Subset(c["cell"].large, c["held"]))[0]}

    if arm.fixed_lr is not None:
        lr, scores, edge = arm.fixed_lr, {}, False
    else:
        lr, scores, edge = reference.choose_lr(
            ctx.runner, arm.name, settings, arm.grid, trial, **fields
        )
        report_lr(arm.name, lr, scores, edge)
        if lr is None:
            return
    for seed in seeds:

        def work(seed: int = seed) -> dict[str, Any]:
            pretrained = features(ctx, c)["val"][8][cka_rows(c)]
            first: dict[str, float] = {}

            def after_epoch(epoch: int, model: nn.Module) -> None:
                if arm.cka and arm.fixed_lr is not None and epoch == 0:
                    pooled = score(model, Subset(c["cell"].val, cka_rows(c)))[1]
                    first["cka_epoch1"] = tl.shift.linear_cka(pooled, pretrained)

            start = time.perf_counter()
            model = train_arm(ctx, arm, c, lr, seed, on_epoch_end=after_epoch)
            took = time.perf_counter() - start
            right, pooled = score(model, c["cell"].val)
            out = {"correct": right, "train_seconds": took, **first}
            if arm.ood:
                out["correct_ood"] = score(model, corrupted(ctx, c))[0]
            if arm.cka:
                out["cka"] = tl.shift.linear_cka(pooled[cka_rows(c)], pretrained)
            return out

        ctx.runner.run(
            arm.name, {**settings, "lr": lr}, seed, work,
            lr_trials={str(k): v for k, v in scores.items()}, lr_at_edge=edge,
            **fields,
        )  # fmt: skip


def report_lr(arm: str, lr: float | None, scores: dict, edge: bool) -> None:
    tried = ", ".join(f"{k:g}: {v:.3f}" for k, v in sorted(scores.items()))
    note = " (still at the grid's edge)" if edge and lr is not None else ""
    print(f"{arm}: lr {lr if lr is None else f'{lr:g}'}{note}; trials {tried}")


# ----------------------------------------------------------------------------- chapter 2
def ch2_data(ctx: Context, name: str) -> dict[str, Any]:
    """Chapter 2's training images of ``name`` (augmented, at the scratch size; all, or
    ``per_class`` of them as its notebook takes) and the whole validation split."""
    sizes = CH2[name]

    def make() -> dict[str, Any]:
        config = tl.data_config(ctx.lite0)
        size = sizes["image_size"]
        train_tf = SCRATCH.train_transform(config, size)
        eval_tf = tl.create_transform(config, image_size=size)
        data = tl.load_dataset(name, train_tf, eval_tf)
        plain = tl.load_dataset(name, eval_tf, eval_tf)
        rows = list(range(len(data.train)))
        if sizes["per_class"]:
            rows = tl.subsample_per_class(
                data.train, sizes["per_class"], seed=0
            ).indices
        train, plain_train = Subset(data.train, rows), Subset(plain.train, rows)
        val = (
            val_split(data.val)
            if name == "eurosat"
            else Subset(data.val, range(len(data.val)))
        )
        fit, held = tl.stratified_split(
            tl.targets_of(train), val_fraction=1 / 3, seed=0
        )
        return {"train": train, "plain_train": plain_train, "val": val,
                "fit": np.asarray(fit), "held": np.asarray(held),
                "tag": f"{digest(train)}/{digest(val)}"}  # fmt: skip

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
            return {"correct": probe.predict(xv.numpy()) == yv.numpy(),
                    "probe_C": float(probe[-1].C)}  # fmt: skip

        settings = {"chapter": 2, "image_size": size, "data": d["tag"], "arm": arm}
        ctx.runner.run(arm, settings, 0, probe_work, **fields)
    arm = f"ch2/{name}/scratch"
    if not ctx.wanted(arm):
        return
    recipe = SCRATCH.replace(epochs=sizes["epochs"])
    settings = {"chapter": 2, "dataset": name, "data": d["tag"], "arm": arm,
                "image_size": sizes["image_size"], "per_class": sizes["per_class"],
                "recipe": recipe_settings(recipe)}  # fmt: skip
    n_classes = len(set(tl.targets_of(d["val"])))

    def scratch(train: Dataset, lr: float, seed: int) -> nn.Module:
        model = cases.create_strategy_model("scratch", n_classes)
        run_recipe(recipe.replace(lr=lr), model, train, num_classes=n_classes,
                   seed=seed, device=DEVICE, num_workers=0, progress=False)  # fmt: skip
        return model.eval()

    def trial(lr: float) -> dict[str, Any]:
        model = scratch(Subset(d["train"], d["fit"]), lr, 0)
        return {"correct": score(model, Subset(d["plain_train"], d["held"]))[0]}

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
            return {"correct": score(model, d["val"])[0], "train_seconds": took}

        ctx.runner.run(
            arm, {**settings, "lr": lr}, seed, work,
            lr_trials={str(k): v for k, v in scores.items()}, lr_at_edge=edge,
            **fields,
        )  # fmt: skip


# ------------------------------------------------------------------------------- order
PRIORITY = (
    "ch3/eurosat/whole_body", "ch3/flowers/whole_body", "ch4/eurosat/FT",
    "ch4/eurosat/warm_large_lr", "ch4/eurosat/cold_large_lr", "ch3/eurosat/top3",
    "ch3/flowers/top3", "ch3/eurosat/reinit_top3", "ch3/eurosat/first2",
    "ch4/eurosat/FT_no_lr_warmup",
)  # fmt: skip
"""The trained arms in the order they run, each with all its seeds before the next: the
comparisons the chapters lead with finish first."""


def plan(ctx: Context) -> Iterator[str]:
    """Every step in order: the probes, then each trained arm of :data:`PRIORITY`
    (its learning-rate trials, then every seed), then chapter 2's."""
    for arm in ARMS:
        if arm.recipe is None and ctx.wanted(arm.name):
            yield arm.name
            c = cell(ctx, arm.dataset)
            settings = settings_of(arm, c)
            fields = {"chapter": arm.chapter, "case": CASE[arm.dataset],
                      "dataset": arm.dataset}  # fmt: skip
            ctx.runner.run(arm.name, settings, 0, lambda a=arm, c=c: probe_work(ctx, a, c),
                           **fields)  # fmt: skip
    by_name = {arm.name: arm for arm in ARMS}
    assert set(PRIORITY) == {a.name for a in ARMS if a.recipe is not None}
    for name in PRIORITY:
        if ctx.wanted(name):
            yield f"{name} seeds {SEEDS}"
            trained_arm(ctx, by_name[name], SEEDS)
    for name in CH2:
        yield f"ch2 {name} seeds {SEEDS}"
        ch2_arms(ctx, name, SEEDS, probes=True)


def code_digest() -> str:
    """The digest of the code every result of this script depends on: the recipe's
    (:func:`tlutils.recipe.code_digest`) and this script's own data, scoring and arms."""
    extra = [
        Arm, Corrupted, score, cell, augmented, probe_work, train_arm, trained_arm,
        ch2_data, ch2_arms, cka_rows, settings_of, val_split,
        cases.load_cell_data, cases.selection_split, cases.cell_stage_features,
        tl.features.extract_features, tl.stages.StageFeatures, tl.stages.stage_outputs,
        tl.shift.corrupt, tl.shift.linear_cka, tl.data.subsample_per_class,
        tl.data.stratified_split, tl.data.load_dataset,
    ]  # fmt: skip
    return recipe_digest(extra)


def git_committer(path: Path) -> Callable[[dict[str, Any]], None]:
    """After each run: commit the results file alone (waits for other git commands)."""

    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"],
        cwd=path.parent, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    repo = Path(top)  # the results file's repository (the script may run from a copy)

    def commit(row: dict[str, Any]) -> None:
        git = repo / ".git"
        busy = ("rebase-merge", "rebase-apply", "MERGE_HEAD", "CHERRY_PICK_HEAD")
        relative = str(path.relative_to(repo))
        message = (
            f"results/reference: {row['arm']} {row['kind']} seed {row['seed']}, "
            f"accuracy {row['accuracy']:.4f} ({row['seconds']:.0f} s)"
        )
        for _ in range(30):
            if not (git / "index.lock").exists() and not any(
                (git / b).exists() for b in busy
            ):
                add = subprocess.run(["git", "add", relative], cwd=repo)
                done = add.returncode == 0 and subprocess.run(
                    ["git", "commit", "-q", "-m", message, "--", relative], cwd=repo
                ).returncode == 0  # fmt: skip
                if done:
                    return
            time.sleep(10)
        print("  (could not commit the results file; it is safe on disk)", flush=True)

    return commit


PAIRS = [  # (arm A, arm B): the comparisons --table prints by the verdict rule
    *(
        (f"ch3/{name}/{a}", f"ch3/{name}/{b}")
        for name in CASE
        for a, b in [
            ("whole_body", "linear_probe"),
            ("whole_body", "cut_probe"),
            ("top3", "linear_probe"),
            ("whole_body", "top3"),
            ("cut_probe", "linear_probe"),
        ]
    ),
    ("ch3/eurosat/top3", "ch3/eurosat/reinit_top3"),
    ("ch3/eurosat/first2", "ch3/eurosat/linear_probe"),
    ("ch3/eurosat/whole_body", "ch3/eurosat/first2"),
    ("ch3/eurosat/whole_body", "ch4/eurosat/FT"),
    ("ch4/eurosat/FT", "ch4/eurosat/FT_no_lr_warmup"),
    ("ch4/eurosat/FT", "ch3/eurosat/linear_probe"),
    ("ch4/eurosat/warm_large_lr", "ch4/eurosat/cold_large_lr"),
    ("ch2/hymenoptera/probe_96", "ch2/hymenoptera/scratch"),
    ("ch2/hymenoptera/probe_224", "ch2/hymenoptera/scratch"),
    ("ch2/eurosat/probe_64", "ch2/eurosat/scratch"),
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
        print("\ncorrupted validation images (OOD):")
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
            try:
                verdict = compare(a, b)
            except ValueError as error:  # e.g. an arm still running: 3 runs against 2
                print(f"  {arm}{where} vs {base}{where}: waiting ({error})")
                continue
            print(f"  {verdict.sentence(arm + where, base + where)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--only",
        default="",
        help="arms whose name contains this (or, comma-separated, any of these)",
    )
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
    code = code_digest()
    provenance = {"commit": reference.git_commit(ROOT), "machine": reference.machine()}
    runner = reference.Runner(
        args.results,
        provenance,
        dry=args.list,
        on_append=git_committer(args.results.resolve()) if args.commit else None,
        log=lambda text: print(text, flush=True),
        code=code,
    )
    ctx = Context(runner, args.only)
    print(f"{len(runner.done)} runs in {args.results}; code {code}")
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
