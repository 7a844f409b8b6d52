"""Small helpers shared by the tests."""

import numpy as np
from PIL import Image


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
