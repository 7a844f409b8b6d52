"""A folder as people have them: every image mode, rotated phone photos, huge and tiny images,
many formats, system files, broken files, nested sub-folders and non-ASCII names. Diagnose
and train run on it, name what they skip and say what they count (chapter 5)."""

import warnings

import numpy as np
import pytest
from helpers import photo_folder
from PIL import Image

import tlutils as tl
from tlutils.cli import main


def messy_folder(root):
    """Two classes of real photo crops plus everything a real folder collects."""
    photo_folder(root, classes=("cats", "coffee"), n=6)
    base = Image.open(root / "cats" / "1.png").convert("RGB")
    cats, coffee = root / "cats", root / "coffee"
    base.convert("L").save(cats / "gray.png")
    base.convert("LA").save(cats / "gray_alpha.png")
    base.convert("P").save(cats / "palette.gif")
    base.convert("RGBA").save(cats / "alpha.png")
    base.convert("CMYK").save(cats / "print.TIFF")
    wide = np.asarray(base.convert("L"), dtype=np.uint16) * 257  # 16-bit grayscale
    Image.fromarray(wide).save(coffee / "sixteen_bit.png")
    portrait = base.resize((90, 180))  # stored sideways, EXIF says: turn it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    portrait.save(coffee / "phone.JPG", exif=exif)
    base.resize((4000, 3000)).save(coffee / "huge.jpeg", quality=50)
    base.resize((8, 8)).save(coffee / "tiny.BMP")
    base.save(coffee / "café_ñ.webp")
    base.save(cats / "猫.PNG")
    for folder in (cats, coffee):
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (folder / "empty.jpg").write_bytes(b"")
        good = (folder / "0.jpg").read_bytes()
        (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
        nested = folder / "more"
        photo_folder(nested, classes=(folder.name,), n=4, seed=5)
        for file in (nested / folder.name).iterdir():  # more/<file>, not more/cats/...
            file.rename(nested / file.name)
        (nested / folder.name).rmdir()
    (cats / "notes.txt").write_text("to sort")
    return root


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    return messy_folder(tmp_path_factory.mktemp("messy") / "photos")


def test_images_are_read_upright_and_in_8_bits(messy):
    phone = tl.load_rgb(messy / "coffee" / "phone.JPG")
    assert phone.size == (180, 90)  # the EXIF orientation is honoured
    sixteen = np.asarray(tl.load_rgb(messy / "coffee" / "sixteen_bit.png"))
    reference = np.asarray(Image.open(messy / "cats" / "1.png").convert("L"))
    assert np.abs(sixteen[..., 0].astype(int) - reference).max() <= 1  # not clipped
    for name in ("gray_alpha.png", "palette.gif", "alpha.png", "print.TIFF"):
        assert tl.load_rgb(messy / "cats" / name).mode == "RGB"


def test_the_scan_names_and_counts_everything(messy):
    scan = tl.scan_folder(messy)
    unreadable = sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1]
                        for p in scan.unreadable)  # fmt: skip
    assert unreadable == [
        "cats/empty.jpg", "cats/truncated.jpg", "coffee/empty.jpg",
        "coffee/truncated.jpg",
    ]  # fmt: skip
    assert [p.rsplit("/", 1)[-1] for p in scan.small] == ["tiny.BMP"]
    assert scan.ignored == 5  # two .DS_Store, two Thumbs.db, one text file
    # the nested images are counted in their class, and their folders named
    assert scan.counts["all"] == {"cats": 6 + 6 + 4, "coffee": 6 + 5 + 4}
    assert sorted(scan.nested.values()) == [4, 4]
    assert all(f.endswith("/more") for f in scan.nested)
    assert {"L", "LA", "P", "RGBA", "CMYK", "I;16"} <= set(scan.modes)


def test_diagnose_and_train_run_and_say_what_they_skip(messy, tmp_path, capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = tl.diagnose(messy, image_size=32, progress=False, device="cpu")
    skipped = " ".join(str(w.message) for w in caught)
    assert "4 unreadable" in skipped and "truncated.jpg" in skipped
    report = found.report()
    assert "4 unreadable files" in report and "tiny.BMP" in report
    assert "8 images in sub-folders of class folders" in report and "more" in report
    assert "5 files that are not images" in report
    out = tmp_path / "model.pt"
    args = ["train", str(messy), "--out", str(out), "--image-size", "32"]
    assert main([*args, "--strategy", "linear_probe", "--quiet"]) == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert tl.load_model(out).classes == ["cats", "coffee"]
    # a short fine-tune reads every kept file through the loader's worker processes
    args = ["train", str(messy), "--out", str(out), "--image-size", "32"]
    args += ["--strategy", "fine_tune", "--epochs", "1", "--lr", "1e-4"]
    assert main([*args, "--quiet", "--batch-size", "16"]) == 0
    assert "Traceback" not in capfd.readouterr().err
    rows = tl.predict_images(out, messy / "cats")
    assert len(rows) == 6 + 6 + 4  # the readable images, nested ones included
