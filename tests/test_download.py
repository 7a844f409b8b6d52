"""The online download path, run against a real HTTP server on 127.0.0.1.

The server (``scripts/reader_run.py``'s ``LoopbackServer``) serves archives that the tests
build in the official layouts from a few real images of the course's mirror; the test-only
variables point tlutils at it and replace the published sizes and checksums.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import time
from pathlib import Path

import pytest
from helpers import load_script
from PIL import Image

import tlutils as tl
from tlutils import datasets as tld

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (SHARED / "hymenoptera").is_dir() or not (SHARED / "flowers").is_dir(),
    reason="the course's shared data mirror is not beside this checkout",
)

reader_run = load_script("scripts/reader_run.py")

PER_CLASS = 3


def _small_counts(name: str, members: dict) -> dict[str, int]:
    top = tld.DATASETS[name].archive_root
    counts: dict[str, int] = {}
    for arcname in members:
        rel = arcname.removeprefix(top + "/")
        if tld.is_image_file(rel):
            key = rel.rsplit("/", 1)[0]
            counts[key] = counts.get(key, 0) + 1
    return counts


def _upscaled_flowers(members: dict) -> dict:
    """Full-size stand-ins: the mirror's photos at twice the size, one with EXIF data."""
    out = {}
    for i, (arcname, src) in enumerate(members.items()):
        if not arcname.endswith(".jpg"):
            out[arcname] = src
            continue
        with Image.open(src) as img:
            big = img.resize((img.width * 2, img.height * 2), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        exif = Image.Exif()
        exif[0x010F] = "a camera"  # Make
        big.save(buffer, "JPEG", quality=95, exif=exif if i == 0 else b"")
        out[arcname] = buffer.getvalue()
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Small official-layout archives of the three datasets (built once), their image
    counts and their checksum lines."""
    folder = tmp_path_factory.mktemp("site")
    archives, counts, lines = {}, {}, []
    for name in ("hymenoptera", "flowers", "eurosat"):
        members = reader_run.archive_members(name, SHARED, limit=PER_CLASS)
        if name == "flowers":
            members = _upscaled_flowers(members)
        path = reader_run.write_archive(
            folder / reader_run.ARCHIVE_NAMES[name], members
        )
        archives[name], counts[name] = path, _small_counts(name, members)
        lines.append(reader_run.checksum_line(path))
    return archives, counts, lines


@pytest.fixture
def site(built, tmp_path, tmp_cache, monkeypatch):
    """The archives, a checksum table, the test-only variables, the small image counts,
    short timeouts, and one retry."""
    archives, counts, lines = built
    monkeypatch.delenv(tld.MIRROR_ENV, raising=False)
    monkeypatch.setenv(tld.TIMEOUT_ENV, "0.5")
    monkeypatch.setattr(tld, "DOWNLOAD_RETRIES", 1)
    for name, info in list(tld.DATASETS.items()):
        monkeypatch.setitem(
            tld.DATASETS, name, dataclasses.replace(info, counts=counts[name])
        )
    table = tmp_path / "checksums.txt"
    table.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv(tld.TEST_CHECKSUMS_ENV, str(table))
    return archives


def _serve(archives, monkeypatch, modes=None, **kw):
    modes = modes or {}
    routes = {
        f"/{p.name}": (p, modes.get(name, "ok"))
        for name, p in archives.items()
        if modes.get(name) != "missing"
    }
    server = reader_run.LoopbackServer(routes, lifetime_s=60, stall_s=5, **kw)
    monkeypatch.setenv(tld.TEST_BASE_ENV, server.url)
    return server


def _leftovers(cache: Path) -> list[str]:
    folder = cache / "datasets"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("name", ["hymenoptera", "flowers", "eurosat"])
def test_download_verify_extract_load_then_cache(name, site, tmp_cache, monkeypatch):
    with _serve(site, monkeypatch) as server:
        root = tl.dataset_dir(name)
    assert root == tmp_cache / "datasets" / name
    assert server.hits == {f"/{site[name].name}": 1}
    assert _leftovers(tmp_cache) == [name]  # no temporary folder, no archive
    splits = tl.load_dataset(name)
    expected = sum(tld.DATASETS[name].counts.values())
    assert len(splits.train) + len(splits.val) == expected
    if name == "flowers":  # prepared as the course's copy: shorter side 160 px
        photos = sorted(root.glob("*/*.jpg"))
        for path in photos:
            with Image.open(path) as img:
                assert min(img.size) == 160 and img.format == "JPEG"
                assert "exif" not in img.info
        assert (root / "LICENSE.txt").is_file()
    # The server is gone: a second call is served from the cache.
    assert tl.dataset_dir(name) == root
    assert tl.data.verify_dataset(name) == root


def test_hymenoptera_files_are_checked_against_the_shipped_manifest(
    site, tmp_path, tmp_cache, monkeypatch
):
    members = reader_run.archive_members("hymenoptera", SHARED, limit=PER_CLASS)
    first = next(iter(members))
    members[first] = Path(members[first]).read_bytes() + b"\0"  # one altered file
    altered = reader_run.write_archive(
        tmp_path / "alt" / "hymenoptera_data.zip", members
    )
    table = Path(os.environ[tld.TEST_CHECKSUMS_ENV])
    table.write_text(reader_run.checksum_line(altered) + "\n")
    with _serve({"hymenoptera": altered}, monkeypatch):
        with pytest.raises(RuntimeError, match="wrong checksum") as info:
            tl.dataset_dir("hymenoptera")
    assert first.removeprefix("hymenoptera_data/") in str(info.value)
    assert _leftovers(tmp_cache) == []


def test_truncated_body_is_retried_then_reported_and_removed(
    site, tmp_cache, monkeypatch
):
    with _serve(site, monkeypatch, {"hymenoptera": "truncate"}) as server:
        with pytest.raises(tld.DownloadError, match="Incomplete or altered") as info:
            tl.dataset_dir("hymenoptera")
    assert info.value.kind == "incomplete"
    assert "run the cell again" in str(info.value)
    assert server.hits["/hymenoptera_data.zip"] == 2  # restarted once
    assert _leftovers(tmp_cache) == []


def test_stalled_server_times_out_quickly(site, tmp_cache, monkeypatch):
    t0 = time.perf_counter()
    with _serve(site, monkeypatch, {"flowers": "stall"}):
        with pytest.raises(tld.DownloadError, match="stalled") as info:
            tl.dataset_dir("flowers")
    assert info.value.kind == "timeout" and tld.TIMEOUT_ENV in str(info.value)
    assert time.perf_counter() - t0 < 5  # 2 attempts of 0.5 s and a 1 s pause
    assert _leftovers(tmp_cache) == []


def test_404_names_the_address_and_the_mirror_variable(site, tmp_cache, monkeypatch):
    with _serve(site, monkeypatch, {"eurosat": "missing"}) as server:
        with pytest.raises(tld.DownloadError, match="404") as info:
            tl.dataset_dir("eurosat")
    message = str(info.value)
    assert info.value.kind == "not_found"
    assert f"{server.url}/EuroSAT.zip" in message and tld.MIRROR_ENV in message
    assert server.hits["/EuroSAT.zip"] == 1  # a 404 is not retried
    assert _leftovers(tmp_cache) == []


@pytest.mark.parametrize("field", ["sha256", "size"])
def test_wrong_checksum_or_size_is_removed_with_advice(
    field, site, tmp_cache, monkeypatch
):
    table = Path(os.environ[tld.TEST_CHECKSUMS_ENV])
    lines = []
    for line in table.read_text().splitlines():
        fname, size, digest = line.split()
        if fname == "hymenoptera_data.zip":
            if field == "sha256":
                digest = "0" * 64
            else:
                size = str(int(size) + 1)
        lines.append(f"{fname} {size} {digest}")
    table.write_text("\n".join(lines) + "\n")
    with _serve(site, monkeypatch):
        with pytest.raises(tld.DownloadError) as info:
            tl.dataset_dir("hymenoptera")
    message = str(info.value)
    assert info.value.kind == "incomplete"
    assert "Incomplete or altered download" in message and "removed" in message
    assert ("bytes instead of" if field == "size" else "hash") in message
    assert _leftovers(tmp_cache) == []


def test_truncated_archive_is_reported_as_such(site, tmp_path, tmp_cache, monkeypatch):
    # The checksum table matches the truncated file, as a broken upstream file would.
    short = tmp_path / "short" / "flower_photos.tgz"
    short.parent.mkdir()
    short.write_bytes(site["flowers"].read_bytes()[:-2000])
    Path(os.environ[tld.TEST_CHECKSUMS_ENV]).write_text(
        reader_run.checksum_line(short) + "\n"
    )
    with _serve({"flowers": short}, monkeypatch):
        with pytest.raises(tld.DownloadError, match="truncated or corrupt") as info:
            tl.dataset_dir("flowers")
    assert info.value.kind == "corrupt"
    assert _leftovers(tmp_cache) == []


def test_interrupted_extraction_leaves_nothing_and_a_retry_succeeds(
    site, tmp_cache, monkeypatch
):
    real = tld._extract_archive

    def interrupted(archive, dest):
        real(archive, dest)  # part of the work done ...
        raise KeyboardInterrupt  # ... then the reader stops the cell

    monkeypatch.setattr(tld, "_extract_archive", interrupted)
    with _serve(site, monkeypatch):
        with pytest.raises(KeyboardInterrupt):
            tl.dataset_dir("eurosat")
        assert _leftovers(tmp_cache) == []
        monkeypatch.setattr(tld, "_extract_archive", real)
        root = tl.dataset_dir("eurosat")
    assert _leftovers(tmp_cache) == ["eurosat"]
    assert len(tl.ImageFolder(root)) == sum(tld.DATASETS["eurosat"].counts.values())


def test_stale_temporary_folders_of_a_killed_kernel_are_swept(
    site, tmp_cache, monkeypatch
):
    datasets = tmp_cache / "datasets"
    dead = datasets / ".hymenoptera-killed"
    (dead / "extracted").mkdir(parents=True)
    (dead / "owner").write_text(f"{tld.socket.gethostname()} 999999999\n")
    running = datasets / ".hymenoptera-running"  # another live process: kept
    running.mkdir()
    (running / "owner").write_text(f"{tld.socket.gethostname()} {os.getppid()}\n")
    with _serve(site, monkeypatch):
        tl.dataset_dir("hymenoptera")
    assert _leftovers(tmp_cache) == [".hymenoptera-running", "hymenoptera"]


def test_offline_and_disk_full_are_distinct_errors(site, tmp_cache, monkeypatch):
    server = _serve(site, monkeypatch)  # never started: nothing listens on its port
    server.httpd.server_close()
    with pytest.raises(tld.DownloadError, match="Could not connect") as info:
        tl.dataset_dir("hymenoptera")
    assert info.value.kind == "offline" and tld.MIRROR_ENV in str(info.value)
    monkeypatch.setattr(
        tld.shutil,
        "disk_usage",
        lambda path: type("Usage", (), {"free": 1000})(),
    )
    with pytest.raises(tld.DownloadError, match="free disk space") as info:
        tl.dataset_dir("hymenoptera")
    assert info.value.kind == "disk_full" and tld.CACHE_ENV in str(info.value)
    assert _leftovers(tmp_cache) == []


def test_disk_full_while_extracting(site, tmp_cache, monkeypatch):
    def full(archive, dest):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tld, "_extract_archive", full)
    with _serve(site, monkeypatch):
        with pytest.raises(tld.DownloadError, match="is full") as info:
            tl.dataset_dir("hymenoptera")
    assert info.value.kind == "disk_full"
    assert _leftovers(tmp_cache) == []


def test_cache_hit_checks_counts_and_offers_the_full_check(
    site, tmp_cache, monkeypatch
):
    with _serve(site, monkeypatch):
        root = tl.dataset_dir("hymenoptera")
    victim = sorted((root / "val" / "bees").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-10])  # altered, count unchanged
    with pytest.raises(RuntimeError, match="wrong checksum"):
        tl.data.verify_dataset("hymenoptera")
    victim.unlink()  # now a file is missing: the cheap check sees it
    with pytest.raises(RuntimeError, match="val/bees") as info:
        tl.dataset_dir("hymenoptera")
    assert "verify_dataset" in str(info.value) and str(root) in str(info.value)


def test_the_published_table_is_used_without_the_test_variables(monkeypatch):
    monkeypatch.delenv(tld.TEST_BASE_ENV, raising=False)
    monkeypatch.setenv(tld.TEST_CHECKSUMS_ENV, "/nonexistent")  # ignored without a base
    for name, info in tld.DATASETS.items():
        assert tld._archive_url(info).startswith("https://"), name
        size, sha256 = tld._expected_archive(info)
        assert size > 10_000_000 and len(sha256) == 64, name
    manifest = tld._package_manifest(tld.DATASETS["hymenoptera"])
    assert len(manifest) == sum(tld.DATASETS["hymenoptera"].counts.values())
