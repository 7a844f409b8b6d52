"""The course's datasets: where they come from, and checks that they are whole (chapter 1).

Fetching, mirroring and verifying live here; folders, splits, transforms and loaders in
:mod:`tlutils.data`.

Three datasets are used in the course:

* ``hymenoptera``: the PyTorch tutorial's ants and bees (train/val folders, 398 images);
* ``flowers``: TensorFlow's ``tf_flowers`` photos (5 classes, 3,670 images, no split);
* ``eurosat``: EuroSAT RGB satellite tiles (10 classes, 27,000 images, no split).

Where the data comes from, in this order:

1. If the environment variable ``TLUTILS_DATA_MIRROR`` is set, it names a folder holding
   ``<name>/`` mirrors (as on the course's CI machines). It is read as it is and the
   network is never touched.
2. Otherwise the official archive is downloaded once into the cache folder
   (``TLUTILS_CACHE``, default ``~/.cache/tlutils``) with pooch (a timeout, retries, a
   progress bar), its published size and SHA-256 are checked, and it is extracted
   atomically; hymenoptera's files are checked one by one against a list shipped in
   ``tlutils/manifests/``, and the flowers are prepared as the course's copy (shorter side
   160 px, see the mirror's ``SOURCE.md``). Each failure raises a :class:`DownloadError`
   that says what happened and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.resources
import os
import shutil
import socket
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torchvision import datasets

from . import smoke

__all__ = [
    "MIRROR_ENV",
    "CACHE_ENV",
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "cache_dir",
    "dataset_dir",
    "verify_mirror",
    "verify_dataset",
    "DownloadError",
    "prepare_shorter_side",
    "is_image_file",
    "unreadable_images",
]

MIRROR_ENV = "TLUTILS_DATA_MIRROR"
"""Environment variable naming an offline mirror folder (CI sets it to ``../shared/data``)."""
CACHE_ENV = "TLUTILS_CACHE"
"""Environment variable naming the cache folder for downloads and features."""
TIMEOUT_ENV = "TLUTILS_DOWNLOAD_TIMEOUT"
"""Environment variable: seconds to wait for a connection and between two received blocks
(default 30); raise it on a very slow connection."""
TEST_BASE_ENV = "TLUTILS_TEST_DOWNLOAD_BASE"
"""Test-only: an address such as ``http://127.0.0.1:8000`` that serves the archives under
their official file names instead of the official hosts (the course's loopback tests)."""
TEST_CHECKSUMS_ENV = "TLUTILS_TEST_CHECKSUMS"
"""Test-only, read only with ``TLUTILS_TEST_DOWNLOAD_BASE``: a file of
``archive-name size sha256`` lines that replaces the published sizes and checksums."""

DOWNLOAD_RETRIES = 3
"""Further attempts after a failed or incomplete download (waiting 1 s, 2 s, 3 s between)."""
DEFAULT_TIMEOUT = 30.0
FLOWERS_SHORT_SIDE = 160
"""The flowers are prepared as the course's copy: shorter side at most 160 px (see ``SOURCE.md``)."""


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset comes from and what a complete copy holds."""

    url: str
    archive_root: (
        str  # folder inside the archive that holds the class folders (or splits)
    )
    counts: dict[str, int]  # expected image count per "split/class" or "class"
    size: int | None = None  # archive size in bytes, as published
    sha256: str | None = None  # archive checksum, as published
    manifest: str | None = None  # per-file sha256 list shipped in tlutils/manifests/
    prepare: str | None = None  # how the course prepares the extracted images
    splits: tuple[str, ...] = ()  # official split folders, if any
    note: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "hymenoptera": DatasetInfo(
        url="https://download.pytorch.org/tutorial/hymenoptera_data.zip",
        archive_root="hymenoptera_data",
        counts={"train/ants": 124, "train/bees": 121, "val/ants": 70, "val/bees": 83},
        # As in the download script of the PyTorch tutorials' CI (pytorch/tutorials).
        size=47286322,
        sha256="fbc41b31d544714d18dd1230b1e2b455e1557766e13e67f9f5a7a23af7c02209",
        manifest="hymenoptera.sha256",  # every file, byte-identical to the course's mirror
        splits=("train", "val"),
        note="ants vs bees from the PyTorch transfer-learning tutorial",
    ),
    "flowers": DatasetInfo(
        url="https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
        archive_root="flower_photos",
        counts={
            "daisy": 633,
            "dandelion": 898,
            "roses": 641,
            "sunflowers": 699,
            "tulips": 799,
        },
        # TensorFlow Datasets' url_checksums/tf_flowers.txt.
        size=228813984,
        sha256="4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c",
        prepare="shorter_side_160",
        note="tf_flowers, 5 kinds of flowers, Flickr photos (CC BY 2.0)",
    ),
    "eurosat": DatasetInfo(
        # The address torchvision.datasets.EuroSAT uses (the authors' own server is often
        # down); the file is the authors' EuroSAT.zip (torchvision's MD5
        # c8fa014336c82ac7804f0398fcb19387), whose size and SHA-256 TensorFlow Datasets
        # publishes in url_checksums/eurosat.txt.
        url="https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
        archive_root="2750",
        size=94280567,
        sha256="8ebea626349354c5328b142b96d0430e647051f26efc2dc974c843f25ecf70bd",
        counts={
            "AnnualCrop": 3000,
            "Forest": 3000,
            "HerbaceousVegetation": 3000,
            "Highway": 2500,
            "Industrial": 2500,
            "Pasture": 2000,
            "PermanentCrop": 2500,
            "Residential": 3000,
            "River": 2500,
            "SeaLake": 3000,
        },
        note="EuroSAT RGB Sentinel-2 tiles, 64x64 px, 10 land-use classes (MIT)",
    ),
}

IMAGE_EXTENSIONS = (*datasets.folder.IMG_EXTENSIONS, ".gif")
"""Files read as images: torchvision's list plus GIF (hymenoptera has one GIF among its ants)."""


def cache_dir() -> Path:
    """The folder for downloads and cached features (``$TLUTILS_CACHE`` or ``~/.cache/tlutils``) (chapter 1)."""
    path = Path(
        os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tlutils"
    ).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(sorted(DATASETS))}."
        )
    return DATASETS[name]


def _count_images(root: Path, info: DatasetInfo) -> dict[str, int]:
    found = {}
    for key in info.counts:
        folder = root / key
        found[key] = (
            sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if folder.is_dir()
            else 0
        )
    return found


def _check_complete(
    root: Path, name: str, info: DatasetInfo, where: str, advice: str = ""
) -> None:
    """Raise if a copy of the dataset lacks class folders or images. Under the FULL smoke
    test's cap (:mod:`tlutils.smoke`) only the first ``cap`` images of each class are
    read, so a copy holding at least those is complete enough (the GPU check carries
    such a subset: ``scripts/gpu_check.sh``)."""
    found = _count_images(root, info)
    cap = smoke.cap()
    wrong = {
        key: (found[key], want)
        for key, want in info.counts.items()
        if (found[key] != want if cap is None else found[key] < min(cap, want))
    }
    if wrong:
        details = "; ".join(
            f"{key}: {have} images, expected {want}"
            for key, (have, want) in wrong.items()
        )
        raise RuntimeError(
            f"The {where} copy of {name!r} at {root} is incomplete or altered ({details})."
            + (f" {advice}" if advice else "")
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_manifest(mirror: Path, name: str, verify_checksums: bool = False) -> None:
    """If the mirror has a ``MANIFEST.sha256``, check that every file it lists for ``name`` is there (and intact)."""
    manifest = mirror / "MANIFEST.sha256"
    if not manifest.is_file():
        return
    missing, altered = [], []
    for line in manifest.read_text().splitlines():
        digest, _, rel = line.strip().partition("  ")
        if not rel.startswith(name + "/"):
            continue
        path = mirror / rel
        if not path.is_file():
            missing.append(rel)
        elif verify_checksums and _sha256(path) != digest:
            altered.append(rel)
    if missing or altered:
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} missing file(s), e.g. {', '.join(missing[:5])}"
            )
        if altered:
            parts.append(
                f"{len(altered)} file(s) with the wrong checksum, e.g. {', '.join(altered[:5])}"
            )
        raise RuntimeError(
            f"The mirror of {name!r} at {mirror / name} does not match {manifest}: {'; '.join(parts)}. "
            "Copy the mirror again."
        )


def _package_manifest(info: DatasetInfo) -> dict[str, str]:
    """``relative path -> sha256`` of every file of a dataset, from ``tlutils/manifests/``."""
    text = (
        importlib.resources.files("tlutils")
        .joinpath("manifests", info.manifest)
        .read_text()
    )
    pairs = (line.strip().partition("  ") for line in text.splitlines() if line.strip())
    return {rel: digest for digest, _, rel in pairs}


def _check_files(root: Path, name: str, info: DatasetInfo, advice: str) -> None:
    """Every image under ``root`` must be listed in the package's manifest, with its sha256."""
    expected = _package_manifest(info)
    unknown, altered = [], []
    for path in sorted(root.rglob("*")):
        if not (path.is_file() and is_image_file(path.name)):
            continue
        rel = path.relative_to(root).as_posix()
        if rel not in expected:
            unknown.append(rel)
        elif _sha256(path) != expected[rel]:
            altered.append(rel)
    if unknown or altered:
        parts = [
            f"{len(files)} {what}, e.g. {', '.join(files[:5])}"
            for files, what in [
                (unknown, "file(s) not in the published dataset"),
                (altered, "file(s) with the wrong checksum"),
            ]
            if files
        ]
        raise RuntimeError(
            f"The copy of {name!r} at {root} does not match the file list shipped with "
            f"tlutils (tlutils/manifests/{info.manifest}): {'; '.join(parts)}. {advice}"
        )


def verify_mirror(name: str) -> Path:
    """Check every file of a mirrored dataset against the mirror's ``MANIFEST.sha256`` (slow: reads all bytes) (chapter 1)."""
    _info(name)
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        raise RuntimeError(
            f"${MIRROR_ENV} is not set, so there is no mirror to verify."
        )
    _check_manifest(Path(mirror).expanduser(), name, verify_checksums=True)
    return Path(mirror).expanduser() / name


def verify_dataset(name: str) -> Path:
    """The full check of a dataset's copy (slow: reads every file) (chapter 1).

    A mirror is checked against its ``MANIFEST.sha256``; a downloaded copy against the
    expected image counts, the file list shipped with tlutils where there is one
    (hymenoptera: every file's SHA-256), and by decoding every image.
    """
    info = _info(name)
    if os.environ.get(MIRROR_ENV):
        root = dataset_dir(name)
        verify_mirror(name)
        return root
    root = cache_dir() / "datasets" / name
    advice = _cache_advice(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset {name!r} is not in the cache ({root}).")
    _check_complete(root, name, info, where="cached", advice=advice)
    if info.manifest:
        _check_files(root, name, info, advice)
    bad = unreadable_images(
        [p for p in sorted(root.rglob("*")) if p.is_file() and is_image_file(p.name)]
    )
    if bad:
        raise RuntimeError(
            f"{len(bad)} image(s) of the cached {name!r} do not decode, e.g. "
            f"{', '.join(str(p) for p in bad[:5])}. {advice}"
        )
    return root


def _cache_advice(root: Path) -> str:
    return (
        f"Delete the folder (shutil.rmtree({str(root)!r})) and run again to download a "
        "fresh copy."
    )


def dataset_dir(name: str, download: bool = True) -> Path:
    """The folder holding dataset ``name``: the mirror if ``$TLUTILS_DATA_MIRROR`` is set, else the download cache (chapter 1).

    With no mirror, the official archive is downloaded once (with a timeout, retries and
    a progress bar), its size and SHA-256 are checked, it is extracted atomically (an
    interrupted download or extraction never leaves a half-written dataset behind) and
    every class's image count is checked; hymenoptera's files are also checked one by
    one, and the flowers are prepared as the course's copy (shorter side 160 px). Later
    calls check the image counts of the cached copy (cheap); :func:`verify_dataset` reads
    every file.
    """
    info = _info(name)
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        root = Path(mirror).expanduser() / name
        if not root.is_dir():
            raise FileNotFoundError(
                f"${MIRROR_ENV} is set to {mirror!r}, but it has no folder {name!r} ({root} does not exist). "
                f"Point ${MIRROR_ENV} at the folder that contains {name}/, or unset it to download "
                f"{info.url}."
            )
        _check_manifest(Path(mirror).expanduser(), name)
        _check_complete(root, name, info, where="mirror")
        return root
    root = cache_dir() / "datasets" / name
    if root.is_dir():
        _check_complete(
            root,
            name,
            info,
            where="cached",
            advice=_cache_advice(root)
            + f" tl.data.verify_dataset({name!r}) checks every file.",
        )
        return root
    if not download:
        raise FileNotFoundError(
            f"Dataset {name!r} is not in the cache ({root}) and download=False."
        )
    _download(name, info, root)
    return root


class DownloadError(RuntimeError):
    """A dataset download failed; ``kind`` says how: ``"offline"``, ``"not_found"``,
    ``"http"``, ``"timeout"``, ``"incomplete"`` (size or checksum mismatch), ``"corrupt"``
    (a truncated or broken archive) or ``"disk_full"`` (chapter 1)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _archive_url(info: DatasetInfo) -> str:
    base = os.environ.get(TEST_BASE_ENV)
    if base:
        return base.rstrip("/") + "/" + info.url.rsplit("/", 1)[-1]
    return info.url


def _expected_archive(info: DatasetInfo) -> tuple[int | None, str | None]:
    """The archive's size and SHA-256: as published, or from the test-only table."""
    table = os.environ.get(TEST_CHECKSUMS_ENV)
    if not (table and os.environ.get(TEST_BASE_ENV)):
        return info.size, info.sha256
    filename = info.url.rsplit("/", 1)[-1]
    for line in Path(table).read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == filename:
            return int(parts[1]), parts[2]
    raise RuntimeError(f"{filename} is not listed in ${TEST_CHECKSUMS_ENV} ({table}).")


def _timeout() -> float:
    return float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT)


_OWNER = "owner"  # "host pid" of the process that extracts into a temporary folder


def _sweep_stale(parent: Path, name: str) -> None:
    """Remove hidden temporary folders left by a killed kernel or an old interrupted run."""
    host = socket.gethostname()
    for folder in parent.glob(f".{name}-*"):
        try:
            age = time.time() - folder.stat().st_mtime
        except OSError:
            continue  # removed meanwhile
        try:
            owner = (folder / _OWNER).read_text().split()
        except OSError:
            owner = []
        stale = age > 24 * 3600
        if len(owner) == 2 and owner[0] == host and owner[1].isdigit():
            stale = stale or not _pid_alive(int(owner[1]))
        elif len(owner) != 2:
            stale = stale or age > 600  # no owner: written by an older tlutils
        if stale:
            shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _megabytes(n: int | None) -> str:
    return "size unknown" if n is None else f"{n / 1e6:.0f} MB"


def _check_free_space(parent: Path, name: str, size: int | None) -> None:
    if size is None:
        return
    need = int(size * 2.2)  # the archive, its extracted files and a margin
    free = shutil.disk_usage(parent).free
    if free < need:
        raise DownloadError(
            "disk_full",
            f"Not enough free disk space to download {name!r}: about {_megabytes(need)} "
            f"needed in {parent}, {_megabytes(free)} free. Free some space, or set "
            f"${CACHE_ENV} to a folder on a disk with room.",
        )


def _explain(
    name: str, url: str, err: BaseException, size: int | None, sha256: str | None
) -> DownloadError:
    """A :class:`DownloadError` that says what went wrong and what to do."""
    import requests

    host = url.split("/")[2]
    mirror_hint = (
        f"Without internet, set the environment variable {MIRROR_ENV} to a folder "
        f"that contains a {name}/ copy (the course's CI uses ../shared/data)."
    )
    again = f"It was removed; run the cell again to download it afresh. {mirror_hint}"
    text = str(err)
    if isinstance(err, requests.HTTPError):
        status = err.response.status_code if err.response is not None else None
        reason = err.response.reason if err.response is not None else ""
        if status is not None and 400 <= status < 500:
            return DownloadError(
                "not_found",
                f"The address {url} answered {status} {reason}: the archive of {name!r} "
                "has moved or was removed. Look for its new address in the course "
                f"repository's issues, or set the environment variable {MIRROR_ENV} to "
                f"a folder that contains a {name}/ copy.",
            )
        return DownloadError(
            "http",
            f"The server {host} answered {status} {reason} for {url} (tried "
            f"{DOWNLOAD_RETRIES + 1} times); try again later. {mirror_hint}",
        )
    if isinstance(err, requests.Timeout) or "timed out" in text.lower():
        return DownloadError(
            "timeout",
            f"The download of {name!r} from {url} stalled: no data for {_timeout():g} s "
            f"(tried {DOWNLOAD_RETRIES + 1} times). Check the connection and run the "
            f"cell again; on a slow connection set the environment variable "
            f"{TIMEOUT_ENV} to more seconds. {mirror_hint}",
        )
    if _offline(err):
        return DownloadError(
            "offline",
            f"Could not connect to {host} to download dataset {name!r} from {url} "
            f"({text}). Check that this machine is online (in Colab: the runtime's "
            f"connection), then run the cell again. {mirror_hint}",
        )
    if isinstance(err, ValueError):  # pooch: hash mismatch; ours: size mismatch
        detail = text.split(". ")[0]
    else:  # the connection was cut or broken while the file came in
        detail = f"the connection broke: {text}"
    return DownloadError(
        "incomplete",
        f"Incomplete or altered download of {name!r} from {url}: {detail} (expected "
        f"{_megabytes(size)}, SHA-256 {sha256}; tried {DOWNLOAD_RETRIES + 1} times). "
        f"{again}",
    )


def _offline(err: BaseException) -> bool:
    """Whether a connection error means no route to the host (no retry helps)."""
    import requests

    text = str(err)
    return isinstance(err, requests.ConnectionError) and (
        "Failed to resolve" in text
        or "Name or service not known" in text
        or "Failed to establish a new connection" in text
    )


def _fetch(
    name: str, url: str, folder: Path, size: int | None, sha256: str | None, dest: Path
) -> Path:
    """Download ``url`` into ``folder`` with pooch: a connect/read timeout, retries with
    back-off, a progress bar, the size and the SHA-256 checked (a short or altered file is
    removed and fetched again); errors become :class:`DownloadError`."""
    import logging

    import pooch
    import requests
    from tqdm.auto import tqdm

    filename = url.rsplit("/", 1)[-1]

    def download(url: str, output_file: str, pup: Any) -> None:
        bar = tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"Downloading {name} ({_megabytes(size)}) to {dest}",
        )
        try:
            pooch.HTTPDownloader(
                progressbar=bar, timeout=_timeout(), chunk_size=1 << 16
            )(url, output_file, pup)
        except requests.RequestException as err:
            permanent = isinstance(err, requests.HTTPError) and (
                err.response is not None and 400 <= err.response.status_code < 500
            )
            if permanent or _offline(err):  # no retry: it would fail the same way
                raise _explain(name, url, err, size, sha256) from err
            raise
        finally:
            bar.close()
        got = os.path.getsize(output_file)
        if size is not None and got != size:
            raise ValueError(f"received {got:,} bytes instead of {size:,}")

    fetcher = pooch.create(
        path=folder,
        base_url="",
        registry={filename: f"sha256:{sha256}" if sha256 else None},
        urls={filename: url},
        retry_if_failed=DOWNLOAD_RETRIES,
    )
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # the progress bar says what is downloaded where
    try:
        return Path(fetcher.fetch(filename, downloader=download))
    except (ValueError, requests.RequestException) as err:
        raise _explain(name, url, err, size, sha256) from err
    finally:
        logger.setLevel(level)


def _extract_archive(archive: Path, dest: Path) -> None:
    """Extract a zip (after checking every member's CRC) or a tar archive into ``dest``."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise zipfile.BadZipFile(f"bad CRC in member {bad}")
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")


def prepare_shorter_side(
    source: Path, dest: Path, short_side: int = FLOWERS_SHORT_SIDE
) -> None:
    """Prepare downloaded photos as the course's copy of the flowers (``SOURCE.md`` of the
    mirror): decoded, converted to RGB, shrunk with LANCZOS so that the shorter side is at
    most ``short_side`` px (aspect ratio kept; smaller photos are only re-encoded), saved
    as JPEG quality 90 (optimize) without metadata, file names unchanged (chapter 1)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    jobs = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (dest / folder.name).mkdir(parents=True, exist_ok=True)
        jobs += [
            (p, dest / folder.name / p.name)
            for p in sorted(folder.iterdir())
            if is_image_file(p.name)
        ]
    for extra in source.iterdir():  # LICENSE.txt: the photographers' credits
        if extra.is_file():
            shutil.copy2(extra, dest / extra.name)

    def one(job: tuple[Path, Path]) -> None:
        src, out = job
        with Image.open(src) as img:
            img = img.convert("RGB")
        w, h = img.size
        if min(w, h) > short_side:
            if w <= h:
                size = (short_side, round(h * short_side / w))
            else:
                size = (round(w * short_side / h), short_side)
            img = img.resize(size, Image.Resampling.LANCZOS)
        img.save(out, "JPEG", quality=90, optimize=True)

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for _ in tqdm(
            pool.map(one, jobs),
            total=len(jobs),
            desc=f"Preparing {source.name} as the course's copy "
            f"(shorter side {short_side} px)",
        ):
            pass


def _download(name: str, info: DatasetInfo, root: Path) -> None:
    parent = root.parent
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(parent, name)
    url = _archive_url(info)
    size, sha256 = _expected_archive(info)
    _check_free_space(parent, name, size)
    tmp_path = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}-"))
    try:
        (tmp_path / _OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
        archive = _fetch(name, url, tmp_path, size, sha256, root)
        extracted = tmp_path / "extracted"
        try:
            _extract_archive(archive, extracted)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as err:
            raise DownloadError(
                "corrupt",
                f"The archive of {name!r} downloaded from {url} is truncated or corrupt "
                f"({type(err).__name__}: {err}); it was removed. Run the cell again to "
                "download it afresh.",
            ) from err
        archive.unlink()
        source = extracted / info.archive_root
        if not source.is_dir():
            raise DownloadError(
                "corrupt",
                f"The archive of {name!r} from {url} has no folder {info.archive_root}/; "
                "the file at that address is not the expected dataset.",
            )
        ready = tmp_path / "ready"
        if info.prepare == "shorter_side_160":
            prepare_shorter_side(source, ready)
        else:
            source.rename(ready)
        advice = "It was removed; run the cell again to download it afresh."
        _check_complete(ready, name, info, where="downloaded", advice=advice)
        if info.manifest:
            _check_files(ready, name, info, advice)
        try:
            os.replace(ready, root)
        except OSError:
            if not root.is_dir():  # another process may have finished first
                raise
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DownloadError(
                "disk_full",
                f"The disk holding {parent} is full; the partial download of {name!r} "
                f"was removed. Free some space (about {_megabytes(size)} for the "
                f"archive and as much for its files), or set ${CACHE_ENV} to a folder "
                "on a disk with room.",
            ) from err
        raise
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def is_image_file(path: str) -> bool:
    """Whether a file name has an image extension that the course reads (chapter 1)."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


def unreadable_images(paths: Sequence[str | Path]) -> list[Path]:
    """The files among ``paths`` that do not decode fully as images (chapter 5).

    Each file is decoded completely, so truncated files are found too, not only files
    whose header is broken.
    """
    bad = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            bad.append(Path(path))
    return bad
