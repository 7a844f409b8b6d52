"""One execution per notebook (_ext/execution_cache.py and the root conftest.py): pytest's
nbval run stores each executed notebook in the book's cache; a changed code cell or a changed
tlutils file makes the book execute it again."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from helpers import load_script
from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parents[1]
ec = load_script("_ext/execution_cache.py")


def _notebook(path: Path, second: str = "print(x + 1)") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_markdown_cell("A tiny notebook."),
        nbformat.v4.new_code_cell("x = 41"),
        nbformat.v4.new_code_cell(second),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _match(cache: Path, path: Path):
    """The cached run the book would use for this notebook file, or None."""
    try:
        return get_cache(str(cache)).match_cache_notebook(nbformat.read(path, 4))
    except KeyError:
        return None


@pytest.fixture
def nbval_run():
    """Run pytest + nbval on a notebook inside the repository (so the root conftest.py is
    loaded), storing into a temporary cache."""
    where = ROOT / "_build" / "test_execution_cache"
    shutil.rmtree(where, ignore_errors=True)
    cache = where / "cache"

    def run(path: Path) -> subprocess.CompletedProcess:
        env = {**os.environ, "TLUTILS_EXECUTION_CACHE": str(cache)}
        env.pop("TLUTILS_TIMINGS_OUT", None)
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            + ["-o", "addopts=--nbval-lax", str(path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    yield where, cache, run
    shutil.rmtree(where, ignore_errors=True)


def test_nbval_run_stores_the_executed_notebook_for_the_book(nbval_run):
    where, cache, run = nbval_run
    path = _notebook(where / "tiny.ipynb")
    result = run(path)
    assert result.returncode == 0, result.stdout + result.stderr
    record = _match(cache, path)
    assert record is not None, result.stdout
    assert record.data["tlutils"] == ec.tlutils_fingerprint()
    stored = get_cache(str(cache)).get_cache_bundle(record.pk).nb
    outputs = [c.outputs for c in stored.cells if c.cell_type == "code"]
    assert outputs[1][0]["text"] == "42\n"

    # A changed code cell no longer matches: the book executes it again.
    _notebook(path, second="print(x + 2)")
    assert _match(cache, path) is None


def test_a_failing_notebook_is_not_stored(nbval_run):
    where, cache, run = nbval_run
    path = _notebook(where / "broken.ipynb", second="raise ValueError('no')")
    result = run(path)
    assert result.returncode == 1
    assert _match(cache, path) is None


def test_a_changed_tlutils_file_removes_the_stored_runs(tmp_path: Path):
    package = tmp_path / "tlutils"
    shutil.copytree(
        ROOT / "tlutils", package, ignore=shutil.ignore_patterns("__pycache__")
    )
    before = ec.tlutils_fingerprint(package)
    path = _notebook(tmp_path / "nb.ipynb")
    executed = nbformat.read(path, 4)
    executed.cells[2].outputs = [nbformat.v4.new_output("stream", text="42\n")]
    cache = tmp_path / "cache"
    ec.store(path, executed, 1.0, cache=cache, fingerprint=before)
    assert ec.purge_stale(cache, before) == []  # same tlutils: kept
    assert _match(cache, path) is not None

    module = package / "train.py"
    module.write_text(module.read_text() + "\n# one more line\n")
    after = ec.tlutils_fingerprint(package)
    assert after != before
    assert ec.purge_stale(cache, after) == [str(path.resolve())]
    assert _match(cache, path) is None


def test_runs_the_book_made_itself_are_stamped(tmp_path: Path):
    path = _notebook(tmp_path / "nb.ipynb")
    cache = tmp_path / "cache"
    get_cache(str(cache)).cache_notebook_file(str(path), check_validity=False)
    assert ec.stamp(cache, "abc") == 1
    assert ec.purge_stale(cache, "abc") == []
    assert ec.purge_stale(cache, "xyz") == [str(path)]


def test_the_book_rereads_notebooks_whose_run_changed(tmp_path: Path):
    """Sphinx re-reads only files whose text changed; a notebook whose stored run was
    removed (another tlutils) or is newer than the last read (pytest ran it) is re-read
    too, with every page, since pages paste its numbers."""
    from datetime import timezone
    from types import SimpleNamespace

    path = _notebook(tmp_path / "nb.ipynb")
    page = tmp_path / "page.md"
    page.write_text("# A page\n")
    cache = tmp_path / "cache"
    executed = nbformat.read(path, 4)
    record = ec.store(path, executed, 1.0, cache=cache, fingerprint="abc")
    stored = get_cache(str(cache)).get_cache_record(record).created  # naive UTC
    created = stored.replace(tzinfo=timezone.utc).timestamp()
    docs = {"nb": path, "page": page}
    app = SimpleNamespace(
        env=SimpleNamespace(
            mystnb_config=SimpleNamespace(
                execution_mode="cache", execution_cache_path=str(cache)
            )
        ),
        _tlutils_removed=[],
    )

    def outdated(read_at: float) -> list[str]:
        env = SimpleNamespace(
            all_docs={"nb": read_at, "page": read_at}, doc2path=lambda d: docs[d]
        )
        return ec._outdated(app, env, set(), set(), set())

    assert outdated((created + 60) * 1e6) == []  # read after the run: up to date
    assert outdated((created - 60) * 1e6) == ["nb", "page"]  # pytest ran it since
    app._tlutils_removed = [str(path.resolve())]
    assert outdated((created + 60) * 1e6) == ["nb", "page"]  # its run was removed
