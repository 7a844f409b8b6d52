"""Every public function and class of tlutils says which chapter teaches it (CONTRIBUTING.md)."""

import importlib
import inspect
import pkgutil
import re

import pytest

import tlutils as tl

MODULES = [
    importlib.import_module(f"tlutils.{info.name}")
    for info in pkgutil.iter_modules(tl.__path__)
]
"""Every module of the package, found by walking it: a new module is checked too."""
PUBLIC = [
    (module.__name__, name, getattr(module, name))
    for module in MODULES
    for name in module.__all__
    if inspect.isfunction(getattr(module, name))
    or inspect.isclass(getattr(module, name))
]


@pytest.mark.parametrize(
    "where, name, obj", PUBLIC, ids=lambda x: x if isinstance(x, str) else ""
)
def test_public_docstring_names_its_chapter(where, name, obj):
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and obj.__module__ != where:
        pytest.skip(f"{name} is re-exported from {obj.__module__}")
    pattern = (
        r"\(chapters? [0-9][0-9, and-]*\)|\(all chapters\)|\(\"Bring your own data\"\)"
    )
    assert re.search(pattern, doc), (
        f"{where}.{name}: the docstring names no chapter: {doc[:80]!r}"
    )
