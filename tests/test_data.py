from pathlib import Path

import pytest
from helpers import write_image
from torch.utils.data import Subset

import tlutils as tl
from tlutils import datasets as tld

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_image_folder_reads_classes_and_converts_modes(tmp_path):
    root = tmp_path / "modes"
    write_image(root / "a" / "gray.png", (100, 100, 100), mode="L")
    write_image(root / "a" / "palette.gif", (200, 10, 10), mode="P")
    write_image(root / "b" / "alpha.png", (10, 200, 10), mode="RGBA")
    (root / "b" / "notes.txt").write_text("not an image")
    dataset = tl.ImageFolder(root)
    assert dataset.classes == ["a", "b"] and len(dataset) == 3
    for image, _ in dataset:
        assert image.mode == "RGB"


def test_corrupt_image_names_the_file(tmp_path):
    root = tmp_path / "bad"
    write_image(root / "a" / "fine.png", (1, 2, 3))
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    dataset = tl.ImageFolder(root)
    with pytest.raises(RuntimeError, match="broken.jpg"):
        [dataset[i] for i in range(len(dataset))]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tl.ImageFolder(tmp_path / "nope")


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match="eurosat, flowers, hymenoptera"):
        tl.dataset_dir("imagenet")


def test_no_mirror_and_no_network_names_address_and_variable(tmp_cache, monkeypatch):
    import socket

    monkeypatch.delenv(tld.MIRROR_ENV, raising=False)
    with socket.socket() as sock:  # a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(tld.TEST_BASE_ENV, f"http://127.0.0.1:{port}")
    with pytest.raises(tld.DownloadError) as info:
        tl.dataset_dir("hymenoptera")
    message = str(info.value)
    assert info.value.kind == "offline"
    assert "hymenoptera_data.zip" in message and tld.MIRROR_ENV in message
    assert list((tmp_cache / "datasets").iterdir()) == []  # nothing half-written


def make_mirror(tmp_path, counts, skip=0):
    mirror = tmp_path / "mirror"
    lines = []
    for key, n in counts.items():
        for i in range(n):
            rel = f"hymenoptera/{key}/{i}.png"
            if i >= skip:
                write_image(mirror / rel, (i, 0, 0), size=(4, 4))
            lines.append(f"{'0' * 64}  {rel}")
    (mirror / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")
    return mirror


def test_mirror_missing_files_says_which(tmp_path, monkeypatch):
    mirror = make_mirror(
        tmp_path,
        {"train/ants": 3, "train/bees": 2, "val/ants": 1, "val/bees": 1},
        skip=1,
    )
    monkeypatch.setenv(tld.MIRROR_ENV, str(mirror))
    with pytest.raises(RuntimeError, match=r"hymenoptera/train/ants/0\.png"):
        tl.dataset_dir("hymenoptera")


def test_mirror_without_the_dataset_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(tld.MIRROR_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="has no folder 'flowers'"):
        tl.dataset_dir("flowers")


def test_mirror_never_touches_the_network(tmp_path, monkeypatch):
    counts = tld.DATASETS["hymenoptera"].counts
    mirror = make_mirror(tmp_path, counts)
    monkeypatch.setenv(tld.MIRROR_ENV, str(mirror))

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(tld, "_fetch", no_network)
    assert tl.dataset_dir("hymenoptera") == mirror / "hymenoptera"
    with pytest.raises(
        RuntimeError, match="wrong checksum"
    ):  # the manifest's zeros are not the files' hashes
        tl.verify_mirror("hymenoptera")


def test_stratified_split_is_seeded_and_keeps_proportions():
    targets = [0] * 50 + [1] * 30 + [2] * 20
    train, val = tl.stratified_split(targets, 0.2, seed=3)
    assert sorted(train + val) == list(range(100)) and not set(train) & set(val)
    assert [sum(targets[i] == c for i in val) for c in range(3)] == [10, 6, 4]
    assert tl.stratified_split(targets, 0.2, seed=3) == (train, val)
    assert tl.stratified_split(targets, 0.2, seed=4) != (train, val)
    with pytest.raises(ValueError, match="between 0 and 1"):
        tl.stratified_split(targets, 1.5)


def test_subsample_per_class(image_folder):
    dataset = tl.ImageFolder(image_folder)
    small = tl.subsample_per_class(dataset, 2, seed=1)
    assert isinstance(small, Subset) and len(small) == 4
    assert sorted(tl.targets_of(small)) == [0, 0, 1, 1]
    assert tl.subsample_per_class(dataset, 2, seed=1).indices == small.indices
    assert tl.classes_of(small) == ["blue", "red"]
    with pytest.raises(ValueError, match="fewer"):
        tl.subsample_per_class(dataset, 7)


def test_transforms_match_the_model_config(image_folder):
    cfg = {
        "input_size": (3, 224, 224),
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
        "interpolation": "bicubic",
        "crop_pct": 0.875,
    }
    dataset = tl.ImageFolder(
        image_folder, transform=tl.create_transform(cfg, image_size=48)
    )
    image, _ = dataset[0]
    assert image.shape == (3, 48, 48) and image.min() >= -1 and image.max() <= 1
    train = tl.create_transform(cfg, train=True, image_size=32)
    assert "RandomResizedCrop" in repr(train) and train(
        tl.load_rgb(dataset.samples[0][0])
    ).shape == (3, 32, 32)


def test_create_loader_is_seeded(image_folder):
    dataset = tl.ImageFolder(image_folder, transform=tl.create_transform(image_size=16))
    first = [
        y.tolist()
        for _, y in tl.create_loader(
            dataset, batch_size=4, shuffle=True, num_workers=0, seed=1
        )
    ]
    again = [
        y.tolist()
        for _, y in tl.create_loader(
            dataset, batch_size=4, shuffle=True, num_workers=0, seed=1
        )
    ]
    assert first == again


def test_default_num_workers_follows_the_platform_and_the_cores(monkeypatch):
    monkeypatch.setattr(tl.data.platform, "system", lambda: "Darwin")
    assert (
        tl.data.default_num_workers() == 0
    )  # spawned workers can't import notebook functions
    monkeypatch.setattr(tl.data.platform, "system", lambda: "Linux")
    monkeypatch.setattr(
        tl.data.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False
    )
    assert tl.data.default_num_workers() == 2
    monkeypatch.setattr(
        tl.data.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False
    )
    assert tl.data.default_num_workers() == 4


@pytest.mark.skipif(
    not (SHARED / "hymenoptera").is_dir(),
    reason="the course's shared data mirror is not beside this checkout",
)
def test_real_mirror_counts_and_splits(monkeypatch):
    monkeypatch.setenv(tld.MIRROR_ENV, str(SHARED))
    hymenoptera = tl.load_dataset("hymenoptera")
    assert (len(hymenoptera.train), len(hymenoptera.val)) == (245, 153)
    flowers = tl.load_dataset("flowers", val_fraction=0.2, seed=0)
    assert (
        len(flowers.train) + len(flowers.val) == 3670 and flowers.classes[0] == "daisy"
    )
    assert len(flowers.val) == sum(
        round(n * 0.2) for n in tld.DATASETS["flowers"].counts.values()
    )
    eurosat = tl.load_dataset("eurosat")
    assert len(eurosat.train) + len(eurosat.val) == 27000 and len(eurosat.classes) == 10
    image, label = eurosat.val[0]
    assert image.size == (64, 64) and label == tl.targets_of(eurosat.val)[0]
    assert tl.targets_of(hymenoptera.val).count(0) == 70  # 70 ants, 83 bees


def test_load_image_folder_splits_own_data(image_folder):
    data = tl.load_image_folder(image_folder, val_fraction=0.5, seed=0)
    assert data.classes == ["blue", "red"] and len(data.train) == len(data.val) == 6
    assert sorted(tl.targets_of(data.val)) == [0, 0, 0, 1, 1, 1]


def test_load_image_folder_with_train_val_folders_and_mismatch(tmp_path):
    for split, classes in [("train", ["a", "b"]), ("val", ["a", "c"])]:
        for c in classes:
            write_image(tmp_path / split / c / "x.png", (1, 2, 3))
    with pytest.raises(ValueError, match="different class folders"):
        tl.load_image_folder(tmp_path)
    write_image(tmp_path / "single" / "only" / "x.png", (1, 2, 3))
    with pytest.raises(ValueError, match="at least 2"):
        tl.load_image_folder(tmp_path / "single")
