"""Time ``tlutils diagnose`` and ``tlutils train`` on the same folder, and check the trained
model against the diagnosis's probe by the verdict rule (chapter 5).

The folder is scikit-learn's handwritten digits (1,797 real 8 x 8 scans, ten classes),
upscaled to 64 px PNGs in a temporary folder, or a folder you name. Each command runs in
a process of its own from an empty feature cache, as a new user's first run in a terminal
would; ``train`` runs with its default settings (``--strategy auto``: it diagnoses first).
Seconds are printed, not asserted: they depend on the machine and on what else runs on it.

    python scripts/benchmark_train.py                 # the digits at 64 px
    python scripts/benchmark_train.py --folder my_photos --image-size 160
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="a class folder (default: the digits)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--strategy", default="auto")
    args = parser.parse_args()
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
