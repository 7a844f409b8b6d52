"""Small helpers shared by the tests."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str):
    """Import a file of the repository that is not a package module (``scripts/x.py``,
    ``_ext/x.py``) under its file name, registered in ``sys.modules`` (dataclasses look
    their module up there while a class is created)."""
    file = ROOT / path
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[file.stem] = module
    spec.loader.exec_module(module)
    return module


def write_image(path, color, size=(40, 32), mode="RGB"):
    """Write a small image of one colour with a little noise, in the given PIL mode."""
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    pixels = np.clip(
        np.array(color, dtype=float) + rng.normal(0, 10, (size[1], size[0], 3)), 0, 255
    )
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def photo_folder(
    root, classes=("cats", "coffee", "rocket"), n=8, size=(96, 72), seed=0
):
    """``root/<class>/<i>.png|jpg``: flipped, shifted, recoloured crops of scikit-image's
    real photos (one photo per class), for tests that need images a model can tell apart."""
    from skimage import data as skdata

    photos = {"cats": skdata.chelsea(), "coffee": skdata.coffee()}
    photos |= {"rocket": skdata.rocket(), "astronaut": skdata.astronaut()}
    rng = np.random.default_rng(seed)
    for name in classes:
        photo = photos[name]
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = photo.shape[:2]
            top, left = rng.integers(0, h // 4), rng.integers(0, w // 4)
            crop = photo[top : top + 3 * h // 4, left : left + 3 * w // 4]
            shift = rng.integers(-20, 20, 3)
            crop = np.clip(crop.astype(int) + shift, 0, 255).astype(np.uint8)
            image = Image.fromarray(crop[:, ::-1] if i % 2 else crop).resize(size)
            image.save(root / name / f"{i}.{'png' if i % 3 else 'jpg'}")
    return root
