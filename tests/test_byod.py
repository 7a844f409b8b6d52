"""The 'Your own project' page's code runs as printed (chapter 5).

On a flat folder, on a pre-split folder with three classes, and on a folder holding a corrupt
and a grayscale image, all made of real photos (scikit-image's), smaller and shorter than the
page's settings: 64 px and one short round of fine-tuning.
"""

import re
import shutil
from pathlib import Path

import matplotlib
import pytest
from helpers import photo_folder
from PIL import Image

matplotlib.use("Agg")

PAGE = Path(__file__).resolve().parents[1] / "book" / "ch5_your_project.md"


def page_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def flat(root: Path) -> Path:
    return photo_folder(root, classes=("cats", "coffee"), n=8)


def pre_split(root: Path) -> Path:
    photo_folder(root / "train", n=8)
    photo_folder(root / "val", n=3, seed=1)
    return root


def corrupt_and_gray(root: Path) -> Path:
    photo_folder(root, classes=("cats", "coffee"), n=8)
    (root / "cats" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    gray = Image.open(root / "coffee" / "1.png").convert("L")
    gray.save(root / "coffee" / "gray.png")
    return root


@pytest.mark.parametrize("make", [flat, pre_split, corrupt_and_gray])
def test_page_code_runs_as_printed(make, tmp_path, monkeypatch):
    monkeypatch.setenv("TLUTILS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    folder = make(tmp_path / "my_photos")
    new = tmp_path / "new_photos"
    new.mkdir()
    shutil.copy(next(folder.rglob("*.png")), new / "a.png")
    labelled = folder / "val" if (folder / "val").is_dir() else folder
    shutil.copytree(labelled, tmp_path / "labelled_photos")
    code = page_code().replace("image_size=160", "image_size=64")
    small = "epochs=1, batch_size=8"
    code = code.replace("epochs=3", small)
    assert code.count("image_size=64") == 2 and small in code
    namespace: dict = {}
    exec(compile(code, str(PAGE), "exec"), namespace)
    classes = (
        sorted(p.name for p in (folder / "train").iterdir())
        if (folder / "train").is_dir()
        else sorted(p.name for p in folder.iterdir())
    )
    assert namespace["model"].classes == classes  # the real classes, also when split
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "model.pt2").is_file()
    assert namespace["row"].classes[0] in classes
    if make is corrupt_and_gray:
        assert any("corrupt.jpg" in p for p in namespace["diagnosis"].scan.unreadable)
        assert namespace["diagnosis"].scan.modes.get("L") == 1
