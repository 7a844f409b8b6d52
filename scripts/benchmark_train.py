"""Time ``tlutils diagnose`` and ``tlutils train`` on the same folder, and check the trained
model against the diagnosis's probe by the verdict rule (chapter 5).

The folder is scikit-learn's handwritten digits (1,797 real 8 x 8 scans, ten classes),
upscaled to 64 px PNGs in a temporary folder, or a folder you name. Each command runs in
a process of its own from an empty feature cache, as a new user's first run in a terminal
would; ``train`` runs with its default settings (``--strategy auto``: it diagnoses first).
Seconds are printed, not asserted: they depend on the machine and on what else runs on it.

    python scripts/benchmark_train.py                 # the digits at 64 px
    python scripts/benchmark_train.py --folder my_photos --image-size 160
    python scripts/benchmark_train.py --held-out eurosat      # issue 31's EuroSAT folder
    python scripts/benchmark_train.py --held-out hymenoptera  # the ants and bees
    python scripts/benchmark_train.py --held-out eurosat --trial-curves  # the early stop
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def digits_folder(root: Path, size: int = 64) -> Path:
    """``root/<digit>/<i>.png``: scikit-learn's digits, upscaled (bilinear) to ``size``."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image / 16 * 255).astype(np.uint8)
        Image.fromarray(pixels, "L").resize((size, size), Image.BILINEAR).save(
            folder / f"{i}.png"
        )
    return root


def tlutils_command() -> str:
    """The ``tlutils`` command that ``pip install -e .`` puts beside this Python."""
    found = shutil.which("tlutils", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("No `tlutils` command: install the package, pip install -e .")
    return found


def eurosat_folders(
    root: Path, per_class: int = 300, held_out: int = 100
) -> tuple[Path, Path]:
    """A new user's EuroSAT: ``root/train/<class>`` with ``per_class`` tiles per class
    and ``root/test/<class>`` with ``held_out`` other tiles, drawn from the mirror with a
    seed of their own (not chapter 3's draw)."""
    import random

    import tlutils as tl

    source = tl.dataset_dir("eurosat")
    for name in sorted(d.name for d in source.iterdir() if d.is_dir()):
        files = sorted(p for p in (source / name).iterdir() if p.suffix == ".jpg")
        random.Random(2026).shuffle(files)
        for part, chosen in [("train", files[:per_class]),
                             ("test", files[per_class:per_class + held_out])]:  # fmt: skip
            (root / part / name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, root / part / name / f.name)
    return root / "train", root / "test"


def hymenoptera_folders(root: Path) -> tuple[Path, Path]:
    """The ants and bees: all training images in a flat folder (``train`` splits it
    into its own train and validation parts), the official validation images held out."""
    import tlutils as tl

    source = tl.dataset_dir("hymenoptera")
    shutil.copytree(source / "train", root / "train")
    shutil.copytree(source / "val", root / "test")
    return root / "train", root / "test"


def run_command(argv: list[str], cache: Path) -> float:
    """Seconds of one ``tlutils`` command in a process of its own, as in a terminal."""
    env = {**os.environ, "TLUTILS_CACHE": str(cache)}
    start = time.perf_counter()
    subprocess.run([tlutils_command(), *argv, "--quiet"], env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def held_out_report(name: str, train: Path, test: Path, size: int, tmp: Path) -> None:
    """``diagnose``, ``train`` (defaults) and the two probes on ``train``; every saved
    model scored on the held-out ``test`` images and compared by the verdict rule."""
    import numpy as np

    import tlutils as tl
    from tlutils.verdict import compare

    cache = tmp / f"cache_{name}"
    common = ["--image-size", str(size)]
    seconds = {"diagnose": run_command(["diagnose", str(train), *common], cache)}
    models = {}
    for strategy in ("auto", "cut_probe", "linear_probe"):
        out = tmp / f"{name}_{strategy}.pt"
        argv = ["train", str(train), *common, "--out", str(out), "--strategy", strategy]
        seconds[f"train ({strategy})"] = run_command(argv, cache)
        models[strategy] = out
    scored = {s: tl.evaluate_folder(m, test) for s, m in models.items()}
    right = {
        s: np.asarray(e.true) == np.asarray(e.predicted) for s, e in scored.items()
    }
    trained = tl.load_model(models["auto"])
    h = trained.history
    print(
        f"\n## {name}: {train} ({sum(1 for _ in train.rglob('*.*'))} files), {size} px"
    )
    for what, s in seconds.items():
        print(f"- {what}: {s:.0f} s")
    print(
        f"- train (auto) / diagnose: {seconds['train (auto)'] / seconds['diagnose']:.1f}x"
    )
    if h["strategy"] != "fine_tune":
        kept = "the probe (no fine-tuning for this case)"
    else:
        kept = (h["fine_tune_skipped"] or h["fine_tune_not_kept"]
                or f"the fine-tune (lr {h.get('recipe', {}).get('lr', '-')})")  # fmt: skip
    print(f"- trained: {h['strategy']}; kept: {kept}")
    if h.get("trials_table"):
        print(h["trials_table"])
    print(h["epochs_table"])
    for s, e in scored.items():
        print(f"- {s} on {len(e.files)} held-out images: accuracy {e.accuracy:.3f}")
    for probe in ("cut_probe", "linear_probe"):
        v = compare(right["auto"], right[probe])
        print(f"- {v.sentence('tlutils train', probe.replace('_', ' '))}")


def trial_curves_report(train: Path, size: int, tmp: Path) -> None:
    """The whole body's trials of ``train`` at the default rates, run to the end: each
    epoch's accuracy on the held-out training images against the probe's, and the epoch
    after which ``train``'s early stop would have ended the trial."""
    import tlutils as tl
    from tlutils import project

    os.environ["TLUTILS_CACHE"] = str(tmp / "cache_curves")
    start = time.perf_counter()
    d = tl.diagnose(train, image_size=size, progress=False)
    print(
        f"\n## trial curves: {train}, {size} px (diagnose {time.perf_counter() - start:.0f} s)"
    )
    for r in project.trial_curves(d, stages=[tl.stages.NUM_STAGES - 1]):
        stop = r["below_probe_after"]
        print(
            f"- {r['candidate']}, lr {r['lr']:g}: held-out accuracy by epoch "
            f"{', '.join(f'{c:.3f}' for c in r['curve'])} (its probe "
            f"{r['probe_held_out']:.3f}); the early stop would have ended it "
            + (f"after epoch {stop}" if stop else "never")
            + f"; {r['seconds']:.0f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="a class folder (default: the digits)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument(
        "--held-out",
        choices=["eurosat", "hymenoptera"],
        help="instead: issue 31's folders with held-out images (EuroSAT 300 tiles per "
        "class at 128 px, 100 held out; the ants and bees at 160 px, their official "
        "validation images held out), each trained and compared with both probes",
    )
    parser.add_argument(
        "--trial-curves",
        action="store_true",
        help="with --held-out: instead, run the whole body's trials to the end and say "
        "when the early stop would have ended them",
    )
    args = parser.parse_args()
    if args.held_out:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make = (
                eurosat_folders if args.held_out == "eurosat" else hymenoptera_folders
            )
            size = 128 if args.held_out == "eurosat" else 160
            train, test = make(root / args.held_out)
            if args.trial_curves:
                trial_curves_report(train, size, root)
            else:
                held_out_report(args.held_out, train, test, size, root)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else digits_folder(Path(tmp) / "d")
        n = sum(1 for p in folder.rglob("*") if p.is_file())
        seconds = {}
        for command in ("diagnose", "train"):
            env = {**os.environ, "TLUTILS_CACHE": str(Path(tmp) / f"cache_{command}")}
            argv = [command, str(folder), "--image-size", str(args.image_size)]
            if command == "train":
                argv += ["--out", str(Path(tmp) / "model.pt")]
                argv += ["--strategy", args.strategy]
            start = time.perf_counter()  # a process of its own, as in a terminal
            subprocess.run(
                [tlutils_command(), *argv, "--quiet"],
                env=env, check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            seconds[command] = time.perf_counter() - start
        import tlutils as tl

        trained = tl.load_model(Path(tmp) / "model.pt")
        verdict = trained.against_probe()
        print(f"\n{n} files at {args.image_size} px")
        for command, s in seconds.items():
            print(f"tlutils {command}: {s:.0f} s")
        print(f"train / diagnose: {seconds['train'] / seconds['diagnose']:.1f}x")
        print(f"strategy: {trained.history['strategy']}")
        print(trained.history["epochs_table"])
        print(verdict.sentence("the saved model", "the probe"))


if __name__ == "__main__":
    main()
