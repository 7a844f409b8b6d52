"""The 'Bring your own data' page's code runs as printed, on a small folder of real photos."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

PAGE = Path(__file__).resolve().parents[1] / "book" / "bring_your_own_data.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def make_folder(root: Path) -> Path:
    """Two classes of real photos (scikit-image's cat and coffee), with flips, crops and shifts of colour."""
    rng = np.random.default_rng(0)
    for name, photo in [("cats", skdata.chelsea()), ("coffee", skdata.coffee())]:
        (root / name).mkdir(parents=True)
        for i in range(10):
            h, w = photo.shape[:2]
            top, left = rng.integers(0, h // 4), rng.integers(0, w // 4)
            crop = photo[top : top + 3 * h // 4, left : left + 3 * w // 4]
            crop = np.clip(crop.astype(int) + rng.integers(-20, 20, 3), 0, 255).astype(
                np.uint8
            )
            image = Image.fromarray(crop[:, ::-1] if i % 2 else crop).resize((96, 72))
            image.save(root / name / f"{i}.{'png' if i % 3 else 'jpg'}")
    return root


def test_page_code_runs_on_a_small_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TLUTILS_CACHE", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "my_photos")
    blocks = python_blocks()
    assert len(blocks) == 2
    namespace: dict = {}
    main = (
        blocks[0]
        .replace('"my_photos"', repr(str(folder)))
        .replace("image_size=160", "image_size=64")
    )
    main = main.replace(
        "warm_up_epochs=3, fine_tune_epochs=5", "warm_up_epochs=1, fine_tune_epochs=1"
    )
    assert "warm_up_epochs=1, fine_tune_epochs=1" in main
    exec(compile(main, str(PAGE), "exec"), namespace)
    assert len(namespace["history"].train_loss) == 2
    assert namespace["per_class"] == 8
    exec(
        compile(
            blocks[1].replace("image_size=160", "image_size=64"), str(PAGE), "exec"
        ),
        namespace,
    )
    assert namespace["X_train"].shape == (16, 1280)
