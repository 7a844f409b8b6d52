"""A reader's run: the course as a fresh Colab runtime meets it, on this machine.

::

    python scripts/reader_run.py [--preinstalled-torch] [--data ../shared/data] [--keep DIR]

1. Builds the official download archives (``hymenoptera_data.zip`` and
   ``flower_photos.tgz``, in the official layouts) from the course's data mirror and serves
   them from an HTTP server on 127.0.0.1 (a thread; it stops itself), with a table of their
   sizes and SHA-256 (``TLUTILS_TEST_DOWNLOAD_BASE``, ``TLUTILS_TEST_CHECKSUMS``: the
   test-only variables of :mod:`tlutils.data`). ``TLUTILS_DATA_MIRROR`` is unset, so the
   datasets go through the download path a reader's runtime takes: download, size and
   checksum, extraction, and the flowers' preparation.
2. Creates a new, plain virtual environment (no system site-packages, so none of the
   developer's tools: no pytest, no MyST-NB) and installs only ``pip install .`` there, plus
   ``nbclient`` and ``ipykernel`` to execute notebooks. From PyPI, torch comes with its CUDA
   libraries (about 6 GB; 12 minutes on the course's machine). ``--preinstalled-torch``
   does what Colab does instead: torch and torchvision (and only what they require) are
   already there, linked from the running Python.
3. Executes ``notebooks/ch1_pretrained_models.ipynb`` and ``notebooks/ch5_your_project.ipynb``
   with nbclient in that environment, then runs ``tlutils diagnose``, ``tlutils train`` and
   ``tlutils predict`` on a small folder of flowers.
4. Fails on any error, on any MyST role or directive left in the notebooks' markdown, and
   on any number that a chapter page pastes from those notebooks (``{glue:text}``) but the
   notebook's own output does not show (``name = value``).

Prints the seconds of every step and in total. The loopback server and the archive builders
are also used by ``tests/test_download.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["ch1_pretrained_models", "ch5_your_project"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp"}

# --------------------------------------------------------------------------- archives


def _images(folder: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:limit] if limit else files


def archive_members(
    name: str, data: Path, limit: int | None = None
) -> dict[str, bytes | Path]:
    """``archive path -> file`` of a dataset's official archive, from a mirror folder
    (``data/<name>/``): ``limit`` images per class (all by default)."""
    source = data / name
    if name == "hymenoptera":
        return {
            f"hymenoptera_data/{split}/{cls}/{p.name}": p
            for split in ("train", "val")
            for cls in ("ants", "bees")
            for p in _images(source / split / cls, limit)
        }
    top = {"flowers": "flower_photos", "eurosat": "2750"}[name]
    members: dict[str, bytes | Path] = {
        f"{top}/{cls.name}/{p.name}": p
        for cls in sorted(d for d in source.iterdir() if d.is_dir())
        for p in _images(cls, limit)
    }
    if name == "flowers":  # the official archive also holds the photographers' credits
        members[f"{top}/LICENSE.txt"] = (
            b"Built by the course's reader_run/tests from its mirror of tf_flowers "
            b"(CC BY 2.0); the credits are in the official archive's LICENSE.txt.\n"
        )
    return members


ARCHIVE_NAMES = {
    "hymenoptera": "hymenoptera_data.zip",
    "flowers": "flower_photos.tgz",
    "eurosat": "EuroSAT.zip",
}


def write_archive(path: Path, members: dict[str, bytes | Path]) -> Path:
    """Write ``members`` as a zip or a gzipped tar (by ``path``'s suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for arcname, src in members.items():
                data = src if isinstance(src, bytes) else Path(src).read_bytes()
                zf.writestr(arcname, data)
    else:
        with tarfile.open(path, "w:gz", compresslevel=1) as tf:
            for arcname, src in members.items():
                data = src if isinstance(src, bytes) else Path(src).read_bytes()
                info = tarfile.TarInfo(arcname)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tf.addfile(info, io.BytesIO(data))
    return path


def checksum_line(path: Path) -> str:
    """``name size sha256``: one line of the table ``TLUTILS_TEST_CHECKSUMS`` names."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"{path.name} {path.stat().st_size} {digest}"


# --------------------------------------------------------------------------- server


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (ephemeral port) in a daemon thread.

    ``routes`` maps ``/name`` to ``(body, mode)``: mode ``"ok"`` serves the body,
    ``"truncate"`` announces the full length but sends half and closes, ``"stall"`` sends
    the headers and a few bytes, then nothing (until ``stall_s`` or the server stops);
    unknown paths answer 404. ``hits`` counts the requests per path. The server stops
    itself after ``lifetime_s`` at the latest.
    """

    def __init__(
        self, routes: dict, lifetime_s: float = 900, stall_s: float = 20
    ) -> None:
        self.routes = routes
        self.hits: dict[str, int] = {}
        self.stop_event = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 (the http.server API)
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path not in server.routes:
                    self.send_error(404, "Not Found")
                    return
                body, mode = server.routes[self.path]
                if isinstance(body, Path):
                    body = body.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if mode == "truncate":
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                    elif mode == "stall":
                        self.wfile.write(body[:100])
                        self.wfile.flush()
                        server.stop_event.wait(stall_s)
                        self.close_connection = True
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.timer = threading.Timer(lifetime_s, self.stop)
        self.timer.daemon = True

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        self.timer.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc) -> None:
        self.timer.cancel()
        if not self.stop_event.is_set():
            self.stop()
        self.thread.join(10)


# --------------------------------------------------------------------------- checks

ROLE = re.compile(r"\{[a-zA-Z][\w:-]*\}`")
DIRECTIVE = re.compile(r"^\s*(```|~~~|:::)\s*\{[\w:-]+\}", re.MULTILINE)


def myst_in_markdown(notebook: dict) -> list[str]:
    """The MyST roles and directives in a notebook's markdown cells."""
    found = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            found += ROLE.findall(text) + DIRECTIVE.findall(text)
    return found


def glued_names(notebook: str) -> set[str]:
    """The keys that the chapter pages paste from ``notebook`` with ``{glue...}``."""
    names = set()
    for page in (ROOT / "book").glob("*.md"):
        for match in re.finditer(
            rf"\{{glue:text\}}`(?:\.\./notebooks/)?{notebook}\.ipynb::([\w-]+)",
            page.read_text(),
        ):
            names.add(match.group(1))
    return names


def missing_numbers(notebook: dict, names: set[str]) -> list[str]:
    """The glued names whose ``name = value`` line is not in the notebook's outputs."""
    text = []
    for cell in notebook["cells"]:
        for out in cell.get("outputs", []):
            if "text" in out:
                text.append("".join(out["text"]))
            for value in out.get("data", {}).values():
                text.append(value if isinstance(value, str) else "".join(value))
    shown = "\n".join(text)
    return sorted(n for n in names if not re.search(rf"\b{re.escape(n)} = ", shown))


# --------------------------------------------------------------------------- run


def _step(name: str, t0: float, timings: dict) -> None:
    timings[name] = round(time.perf_counter() - t0, 1)
    print(f"=== {name}: {timings[name]} s", flush=True)


def _run(cmd: list[str], env: dict, cwd: Path | None = None) -> None:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, check=True)


NB_RUNNER = """
import json, sys, nbformat
from nbclient import NotebookClient
path, out = sys.argv[1], sys.argv[2]
nb = nbformat.read(path, as_version=4)
NotebookClient(nb, timeout=1800, kernel_name="python3",
               resources={"metadata": {"path": sys.argv[3]}}).execute()
nbformat.write(nb, out)
"""


def _link_preinstalled(
    venv: Path, names: tuple[str, ...] = ("torch", "torchvision")
) -> int:
    """Link the running Python's ``names`` and everything they require into the venv's
    site-packages, as Colab has torch and torchvision preinstalled (nothing else leaks:
    no pytest, no MyST-NB). Returns the number of distributions linked."""
    from importlib import metadata

    from packaging.requirements import Requirement

    site = next((venv / "lib").glob("python3*/site-packages"))
    todo, seen = list(names), set()
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
        base = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or []}:
            src, dst = base / top, site / top
            if src.exists() and not dst.exists() and not top.startswith(".."):
                dst.symlink_to(src)
    return len(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--keep", help="work in this folder and keep it")
    parser.add_argument(
        "--venv", help="reuse this virtual environment (default: a new one)"
    )
    parser.add_argument(
        "--preinstalled-torch",
        action="store_true",
        help="as in Colab, torch and torchvision (and what they need) are already there: "
        "link this Python's into the new venv instead of downloading them from PyPI "
        "(several GB with the CUDA libraries)",
    )
    args = parser.parse_args(argv)
    data = Path(args.data).resolve()
    work = Path(args.keep or tempfile.mkdtemp(prefix="reader-run-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    failures: list[str] = []

    # The notebooks' markdown first: cheap, and a failure needs no install.
    for name in NOTEBOOKS:
        nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
        roles = myst_in_markdown(nb)
        if roles:
            failures.append(f"{name}: MyST in markdown cells: {sorted(set(roles))}")

    t0 = time.perf_counter()
    archives = work / "archives"
    table = []
    for name in ("hymenoptera", "flowers"):
        path = write_archive(
            archives / ARCHIVE_NAMES[name], archive_members(name, data)
        )
        table.append(checksum_line(path))
    (work / "checksums.txt").write_text("\n".join(table) + "\n")
    _step("archives built from the mirror", t0, timings)

    t0 = time.perf_counter()
    venv = Path(args.venv) if args.venv else work / "venv"
    if not (venv / "bin" / "python").exists():
        _run([sys.executable, "-m", "venv", venv], env=dict(os.environ))
    py = venv / "bin" / "python"
    clean_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TLUTILS_", "PYTHON", "VIRTUAL_ENV", "JUPYTER"))
    }
    clean_env["PATH"] = f"{venv / 'bin'}:{clean_env.get('PATH', '')}"
    build = (
        work / "src"
    )  # a copy of the package, so no build files land in the checkout
    if build.exists():
        shutil.rmtree(build)
    shutil.copytree(
        ROOT,
        build,
        ignore=shutil.ignore_patterns(
            ".git", "_build", "*.egg-info", "build", "__pycache__", ".ruff_cache"
        ),
    )
    if args.preinstalled_torch:
        print("linked from this Python:", _link_preinstalled(venv), "distributions")
    _run(
        [py, "-m", "pip", "install", "-q", ".", "nbclient", "ipykernel"],
        env=clean_env,
        cwd=build,
    )
    _step("fresh virtual environment: pip install . nbclient ipykernel", t0, timings)
    check = subprocess.run(
        [py, "-c", "import importlib.util as u; print([m for m in "
         "('pytest', 'nbval', 'myst_nb', 'jupyter_book') if u.find_spec(m)])"],
        env=clean_env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    if check.stdout.strip() != "[]":
        failures.append(f"developer tools leaked into the venv: {check.stdout}")

    routes = {f"/{p.name}": (p, "ok") for p in archives.iterdir()}
    with LoopbackServer(routes) as server:
        env = dict(clean_env)
        env.update(
            TLUTILS_TEST_DOWNLOAD_BASE=server.url,
            TLUTILS_TEST_CHECKSUMS=str(work / "checksums.txt"),
            TLUTILS_CACHE=str(work / "cache"),
            PYTHONHASHSEED="0",
        )
        for name in NOTEBOOKS:
            t0 = time.perf_counter()
            out = work / f"{name}.executed.ipynb"
            try:
                _run(
                    [py, "-c", NB_RUNNER, ROOT / "notebooks" / f"{name}.ipynb", out,
                     ROOT / "notebooks"],
                    env=env,
                )  # fmt: skip
            except subprocess.CalledProcessError as err:
                failures.append(f"{name}: execution failed ({err})")
                continue
            finally:
                _step(f"notebook {name}", t0, timings)
            missing = missing_numbers(json.loads(out.read_text()), glued_names(name))
            if missing:
                failures.append(f"{name}: numbers not in its output: {missing}")

        t0 = time.perf_counter()
        flowers = work / "cache" / "datasets" / "flowers"
        folder = work / "small_folder"
        cli = venv / "bin" / "tlutils"
        try:
            _run([py, "-c", "import tlutils as tl; tl.dataset_dir('flowers')"], env=env)
            for cls in ("daisy", "roses", "tulips"):
                (folder / cls).mkdir(parents=True, exist_ok=True)
                for p in sorted((flowers / cls).iterdir())[:12]:
                    shutil.copy(p, folder / cls / p.name)
            _run([cli, "diagnose", folder, "--report", work / "report.md"], env=env)
            _run(
                [cli, "train", folder, "--out", work / "model.pt",
                 "--epochs", "1"],
                env=env,
            )  # fmt: skip
            _run(
                [cli, "predict", work / "model.pt", folder / "roses", "--csv",
                 work / "predictions.csv"],
                env=env,
            )  # fmt: skip
        except subprocess.CalledProcessError as err:
            failures.append(f"tlutils command failed: {err}")
        _step("tlutils diagnose/train/predict", t0, timings)
        print("requests served:", server.hits)

    timings["total"] = round(time.perf_counter() - start, 1)
    print(json.dumps(timings, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("READER RUN FAILED:\n- " + "\n- ".join(failures))
        return 1
    print(f"reader run passed in {timings['total']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
