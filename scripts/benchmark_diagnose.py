"""Time ``tl.diagnose`` on 1,000 images at 160 px: empty feature cache, then cached (chapter 5).

The images are the first 200 photos of each of the five flower classes of the course's
mirror (already 160 px), copied to a temporary folder. Seconds are printed, not asserted:
they depend on the machine and on what else runs on it.

    TLUTILS_DATA_MIRROR=/path/to/shared/data python scripts/benchmark_diagnose.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=160)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TLUTILS_CACHE"] = str(Path(tmp) / "cache")  # an empty cache
        import tlutils as tl

        flowers = tl.dataset_dir("flowers")
        folder = Path(tmp) / "photos"
        for name in sorted(p.name for p in flowers.iterdir() if p.is_dir()):
            (folder / name).mkdir(parents=True)
            for file in sorted((flowers / name).iterdir())[: args.per_class]:
                shutil.copy(file, folder / name / file.name)
        n = sum(1 for _ in folder.rglob("*.jpg"))
        for label in ("empty cache", "cached"):
            start = time.perf_counter()
            result = tl.diagnose(folder, image_size=args.image_size, progress=False)
            seconds = time.perf_counter() - start
            print(
                f"diagnose, {n} images at {args.image_size} px, {label}: {seconds:.1f} s"
            )
        print(
            f"(probe accuracy {result.val_accuracy:.3f}, case {result.recommendation.case})"
        )


if __name__ == "__main__":
    main()
