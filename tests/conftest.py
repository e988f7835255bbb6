"""Shared fixtures: sample photos and generated images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PHOTOS = Path(__file__).parent / "data" / "photos"


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """The real sample photos shipped in the repo."""
    files = sorted(p for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".png"))
    assert len(files) >= 5
    return files


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
