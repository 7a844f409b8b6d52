"""Shared fixtures: small image folders written by the tests themselves, and the pretrained model."""

from __future__ import annotations

import pytest
from helpers import write_image

import tlutils as tl


@pytest.fixture
def image_folder(tmp_path):
    """A class-per-folder dataset: 6 red and 6 blue images."""
    root = tmp_path / "colors"
    for i in range(6):
        write_image(root / "red" / f"r{i}.png", (220, 30, 30))
        write_image(root / "blue" / f"b{i}.jpg", (30, 30, 220))
    return root


@pytest.fixture(scope="session")
def pretrained():
    """The offline EfficientNet-Lite0 with its ImageNet weights, in eval mode (loaded once)."""
    return tl.create_model().eval()


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty tlutils cache folder for one test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(tl.data.CACHE_ENV, str(cache))
    return cache
