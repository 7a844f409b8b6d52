"""MathJax served with the book, so that formulas render offline.

Sphinx loads MathJax 3 from a CDN by default: offline, every formula stays raw TeX
(``\\(\\ln 5\\)``). ``_config.yml`` sets ``mathjax_path`` to a path under ``_static/``
(``mathjax/tex-mml-chtml.js``), and this extension copies that script, and what it loads
while it typesets (TeX extensions loaded on demand, the CHTML fonts, the menu's
accessibility parts), from an installed package into the built HTML's
``_static/mathjax/``. The package is ``django-static-mathjax`` (PyPI, no dependencies:
MathJax 3.2's ``es5`` build as plain files; ``requirements.txt`` installs it). A build
without it stops at once with the command that installs it. A ``mathjax_path`` that is
an address (``https://...``) is left alone.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from sphinx.errors import ExtensionError

PACKAGE = "django-static-mathjax"
#: Where the installed package keeps MathJax's build (its import name is ``mathjax``).
BUILD = Path("static", "mathjax", "es5")
#: ``mathjax_path`` values that this extension serves start with this folder.
PREFIX = "mathjax/"
#: What a combined component loads while it typesets, relative to the build: TeX
#: extensions (autoload, require), the CHTML fonts, the menu and its accessibility
#: tools.
RUNTIME = ("input", "output/chtml", "ui", "a11y", "sre")


def mathjax_build() -> Path:
    """The folder of the installed MathJax build (``es5``); an error naming the
    install command when the package is missing."""
    spec = importlib.util.find_spec("mathjax")
    for location in (spec and spec.submodule_search_locations) or []:
        folder = Path(location) / BUILD
        if (folder / "startup.js").is_file():
            return folder
    raise ExtensionError(
        f"MathJax is not installed, so the book's formulas would stay raw offline: "
        f"pip install -r requirements.txt (it installs {PACKAGE})."
    )


def is_local(path: str) -> bool:
    """True for a ``mathjax_path`` this extension serves (not an address)."""
    return path.startswith(PREFIX) and "://" not in path


def files_to_copy(build: Path, component: str) -> list[Path]:
    """The component script and every file it may load, relative to ``build``."""
    if not (build / component).is_file():
        raise ExtensionError(
            f"mathjax_path names {PREFIX}{component}, which MathJax's build in {build} "
            "does not have (e.g. tex-mml-chtml.js, tex-chtml.js)."
        )
    files = [Path(component)]
    for folder in RUNTIME:
        files += sorted(
            p.relative_to(build) for p in (build / folder).rglob("*") if p.is_file()
        )
    return files


def copy_mathjax(build: Path, component: str, static: Path) -> int:
    """Copy the component and its run-time files into ``static/mathjax``; files already
    there with the same size are kept. Returns the number of files copied."""
    copied = 0
    for rel in files_to_copy(build, component):
        source, target = build / rel, static / PREFIX / rel
        if target.is_file() and target.stat().st_size == source.stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied += 1
    return copied


def _check(app, config) -> None:
    if is_local(config.mathjax_path):  # fail before reading any page
        files_to_copy(mathjax_build(), config.mathjax_path.removeprefix(PREFIX))


def _copy(app, exception) -> None:
    path = app.config.mathjax_path
    if exception is None and app.builder.format == "html" and is_local(path):
        static = Path(app.outdir) / "_static"
        copy_mathjax(mathjax_build(), path.removeprefix(PREFIX), static)


def setup(app):
    app.connect("config-inited", _check)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
