"""Plain helpers shared by the tests (fixtures live in ``tests/fixtures``).

``cli`` stays importable for the end-to-end tests that run ``imgstream`` in
the foreground; everything that needs a broker or a process lifetime is a
fixture instead.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from imgstream.schema.records import ImageRef, Lineage, Result

PHOTOS = Path(__file__).parent / "data" / "photos"

T = TypeVar("T")


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``imgstream ARGS...`` in a subprocess, as a user would; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "imgstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(
    condition: Callable[[], T], timeout: float, interval: float = 0.1, what: str = ""
) -> T:
    """Call ``condition`` until it returns something truthy (returned); fail after ``timeout`` s.

    The way to wait for an event from another process: the deadline only
    bounds a failure, it never decides a pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def write_images(directory: Path, n: int, size: tuple[int, int] = (48, 64)) -> list[Path]:
    """n small, distinct colour PNGs (uncompressed, so writing them is cheap)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    paths = []
    for i in range(n):
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        path = directory / f"img{i:05d}.png"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 0])
        paths.append(path)
    return paths


def refs_for(paths: list[Path], source: str = "test") -> list[ImageRef]:
    """One ref per file, id = the file's stem, stamped now."""
    now = int(time.time() * 1000)
    return [ImageRef(id=p.stem, uri=str(p), ts=now, source=source) for p in paths]


def result_record(ref_id: str, **fields: object) -> Result:
    """A small result record of ``ref_id`` (an 8x8 gray output), with ``fields`` replaced."""
    record = Result(
        id=ref_id,
        uri=f"/{ref_id}.png",
        output_uri=f"/o/{ref_id}.png",
        pipeline="gray",
        pipeline_hash="h",
        width=8,
        height=8,
        channels=1,
        outputs={},
        timings={},
        batch_id="b",
        worker="w",
        source="cam",
        ts=1,
        latency_ms=1,
        lineage=Lineage("refs", 0, 0, None, {}),
    )
    return dataclasses.replace(record, **fields)
