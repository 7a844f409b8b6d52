"""One execution per notebook: the test run's executions feed the book build.

``pytest`` executes every notebook with nbval; the root ``conftest.py`` then stores each
notebook that ran without a failure, with its outputs, in the book's execution cache (the
jupyter-cache that MyST-NB reads with ``execute_notebooks: cache``, at
``_build/.jupyter_cache``). ``jupyter-book build .`` finds it there and does not execute it
again. The cache is keyed the way the book keys it, by the notebook's code and metadata, so a
changed code cell executes again. That key does not see ``tlutils``, so every stored run also
records a fingerprint of the package's files; this Sphinx extension removes, before the
build reads any notebook, every stored run made with another ``tlutils``, and stamps the
runs the build itself made. A book built without ``pytest`` first executes every notebook
as before.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Where the book keeps it (MyST-NB's default, beside _build/html); a test may point the test
# run elsewhere with TLUTILS_EXECUTION_CACHE.
CACHE = Path(
    os.environ.get("TLUTILS_EXECUTION_CACHE", ROOT / "_build" / ".jupyter_cache")
)
KEY = "tlutils"


def tlutils_fingerprint(package: Path = ROOT / "tlutils") -> str:
    """A digest of every file of the ``tlutils`` package (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def store(
    path: Path,
    executed: Any,
    seconds: float,
    cache: Path = CACHE,
    fingerprint: str | None = None,
) -> int:
    """Store an executed notebook (an ``nbformat`` node) for ``path`` in the cache;
    returns its record's id."""
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    nbformat.validate(executed)
    record = get_cache(str(cache)).cache_notebook_bundle(
        CacheBundleIn(
            executed,
            str(Path(path).resolve()),
            data={
                "execution_seconds": seconds,
                KEY: fingerprint or tlutils_fingerprint(),
                "executed_by": "pytest (nbval)",
            },
        ),
        check_validity=False,
        overwrite=True,
    )
    return record.pk


def purge_stale(cache: Path = CACHE, fingerprint: str | None = None) -> list[str]:
    """Remove every stored run made with another ``tlutils``; returns their notebooks."""
    if not cache.exists():
        return []
    from jupyter_cache import get_cache

    fingerprint = fingerprint or tlutils_fingerprint()
    jc = get_cache(str(cache))
    removed = []
    for record in jc.list_cache_records():
        if (record.data or {}).get(KEY) != fingerprint:
            removed.append(record.uri)
            jc.remove_cache(record.pk)
    return removed


def stamp(cache: Path = CACHE, fingerprint: str | None = None) -> int:
    """Record the current fingerprint on runs that the book build made itself."""
    if not cache.exists():
        return 0
    from jupyter_cache import get_cache
    from jupyter_cache.cache.db import NbCacheRecord, session_context

    fingerprint = fingerprint or tlutils_fingerprint()
    jc = get_cache(str(cache))
    stamped = 0
    with session_context(jc.db) as session:
        for record in session.query(NbCacheRecord).all():
            if KEY not in (record.data or {}):
                record.data = {**(record.data or {}), KEY: fingerprint}
                stamped += 1
        session.commit()
    return stamped


def _cache_of(app) -> Path:
    return Path(app.env.mystnb_config.execution_cache_path)


def _before_build(app) -> None:
    from sphinx.util import logging

    log = logging.getLogger(__name__)
    app._tlutils_removed = []
    if app.env.mystnb_config.execution_mode != "cache":
        return
    cache = _cache_of(app)
    app._tlutils_removed = purge_stale(cache)
    for uri in app._tlutils_removed:
        log.info(
            f"execution cache: {Path(uri).name} was run with another tlutils; removed"
        )
    if cache.exists():
        from jupyter_cache import get_cache

        records = get_cache(str(cache)).list_cache_records()
        names = ", ".join(sorted(Path(r.uri).name for r in records)) or "none"
        log.info(f"execution cache: {len(records)} executed notebook(s) ready: {names}")


def _outdated(app, env, added, changed, removed) -> list[str]:
    """Notebooks an earlier build read whose stored run was removed or is newer than that
    read (pytest ran them since), and then every page too, since pages paste their
    numbers. Sphinx itself re-reads only files whose own text changed."""
    if app.env.mystnb_config.execution_mode != "cache":
        return []
    from datetime import timezone

    from jupyter_cache import get_cache

    cache = _cache_of(app)
    records = {}
    if cache.exists():
        records = {r.uri: r for r in get_cache(str(cache)).list_cache_records()}
    stale = set(getattr(app, "_tlutils_removed", []))
    notebooks = []
    for docname, read in env.all_docs.items():
        path = str(Path(env.doc2path(docname)).resolve())
        if not path.endswith(".ipynb"):
            continue
        record = records.get(path)
        created = record and record.created.replace(tzinfo=timezone.utc).timestamp()
        if path in stale or (created and created * 1e6 > read):
            notebooks.append(docname)
    if not notebooks:
        return []
    return sorted(set(notebooks) | {d for d in env.all_docs if d not in notebooks})


def _after_build(app, exception) -> None:
    if exception is None and app.env.mystnb_config.execution_mode == "cache":
        stamp(_cache_of(app))


def setup(app):
    # After MyST-NB has set the cache's path (its handler runs at the default priority).
    app.connect("builder-inited", _before_build, priority=900)
    app.connect("env-get-outdated", _outdated)
    app.connect("build-finished", _after_build)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
