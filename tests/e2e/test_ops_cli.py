"""`imgstream run --ops SPEC` through the broker equals the OpenCV reference."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from tests.helpers import cli
from tests.unit.test_ops import CASES, gray_of

ACCEPTANCE = [
    "equalize",
    "clahe:clip=2.0,tile=8",
    "canny:lo=100,hi=200",
    "threshold:method=otsu",
    "resize:w=320",
    "gray|blur:k=5",
]


def _run(folder, out, spec: str) -> list[dict]:
    proc = cli(
        "run", str(folder), "--out", str(out), "--ops", spec, "--max-wait", "0.1", timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def folder(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for p in photos:
        shutil.copy(p, root / p.name)
    return root


@pytest.mark.parametrize("spec", ACCEPTANCE)
def test_run_equals_the_opencv_reference(folder, tmp_path, spec) -> None:
    records = _run(folder, tmp_path / "out", spec)
    results = [r for r in records if r["kind"] == "result"]
    assert len(results) == len(list(folder.iterdir()))
    for r in results:
        expected = CASES[spec](cv2.imread(r["uri"]))
        got = cv2.imread(r["output_uri"], cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, expected), (spec, r["uri"])


def test_faces_in_records_equal_detect_multiscale(folder, tmp_path) -> None:
    records = _run(folder, tmp_path / "out", "faces:scale=1.1,neighbors=5,min=30")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = 0
    for r in (r for r in records if r["kind"] == "result"):
        expected = cascade.detectMultiScale(gray_of(cv2.imread(r["uri"])), 1.1, 5, minSize=(30, 30))
        assert r["outputs"]["faces"]["boxes"] == [list(map(int, b)) for b in expected]
        found += r["outputs"]["faces"]["count"]
    assert found >= 1  # the astronaut faces the camera


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("gray|nope", "unknown operation 'nope'"),
        ("blur:k=x", "parameter 'k' expects int"),
        ("resize:w=-3", "parameter 'w' must be >= 1"),
    ],
)
def test_wrong_specs_stop_at_start_up(tmp_path, spec, needle) -> None:
    proc = cli("run", str(tmp_path), "--out", str(tmp_path / "o"), "--ops", spec, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr


def test_tiling_refuses_whole_image_operations(tmp_path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((64, 64, 3), np.uint8))
    for spec, needle in (("equalize", "equalize"), ("gray|canny", "canny")):
        proc = cli(
            "run",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--ops",
            spec,
            "--tile",
            "32",
            timeout=60,
        )
        assert proc.returncode == 2 and needle in proc.stderr and "tiles" in proc.stderr
    proc = cli(
        "run",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--ops",
        "blur:k=9",
        "--tile",
        "32",
        "--overlap",
        "2",
        timeout=60,
    )
    assert proc.returncode == 2 and "at least" in proc.stderr
