"""`imgstream run --tile` on a large real-content image: exact fusion, small workers."""

from __future__ import annotations

import re

import cv2
import numpy as np


def test_tiled_run_is_exact_and_workers_stay_small(photos, run_cli, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    base = cv2.imread(str(next(p for p in photos if p.name == "coffee.jpg")))
    big = cv2.resize(base, (12000, 9000), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(src / "big.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    del big
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        str(src),
        "--out",
        str(out),
        "--tile",
        "2048",
        "--overlap",
        "64",
        "--ops",
        "gray",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 images in 30 tiles; 1 stitched" in proc.stdout
    fused = [p for p in out.rglob("big-*.png") if "_r" not in p.name]
    assert len(fused) == 1
    whole = cv2.cvtColor(cv2.imread(str(src / "big.jpg")), cv2.COLOR_BGR2GRAY)
    assert np.array_equal(cv2.imread(str(fused[0]), cv2.IMREAD_UNCHANGED), whole)
    decoded_mb = 12000 * 9000 * 3 / 2**20
    peaks = [
        float(m.group(1))
        for log in (out / "logs").glob("worker-*.log")
        for m in re.finditer(r"peak memory (\d+) MB", log.read_text())
    ]
    assert peaks and max(peaks) < decoded_mb / 2, (peaks, decoded_mb)
