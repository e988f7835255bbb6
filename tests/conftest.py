"""Registers the shared fixtures (``tests/fixtures``) for every test directory."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.images",
    "tests.fixtures.processes",
    "tests.fixtures.cluster",
    "tests.fixtures.kafka",
    "tests.fixtures.deploy",
    "tests.fixtures.streams",
    "tests.fixtures.s3",
    "tests.fixtures.browser",
    "tests.fixtures.plugins",
]


def pytest_configure(config: pytest.Config) -> None:
    """Keep OpenCV's expected decode warnings (corrupt test files) out of the output."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
