"""Benchmark: a huge image as tiles across 2 workers vs as one image in one process.

Makes a SIZE x SIZE RGB PNG (smooth content, so the file stays small), then
for each pipeline (gray, blur:k=5) times and measures peak memory of:

(a) one process: imread -> op -> imwrite PNG (the whole image in memory);
(b) ``imgstream run --tile 2048 --workers 2`` end to end (producer cutting
    the tiles, two workers, the aggregator stitching band by band).

Run on purpose: ``python benchmarks/bench_tiles.py [--size 20000]``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ONE_PROCESS = r"""
import os, resource, sys, time
os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(2_000_000_000)
import cv2
t = time.perf_counter()
img = cv2.imread(sys.argv[1])
gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
out = gray if sys.argv[3] == "gray" else cv2.GaussianBlur(img, (5, 5), 0)
cv2.imwrite(sys.argv[2], out, [cv2.IMWRITE_PNG_COMPRESSION, 1])
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def make_image(path: Path, size: int) -> None:
    """A smooth SIZE x SIZE colour image written band by band (never whole in memory)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from imgstream.imaging import PngStreamWriter

    band = 1000
    x = np.arange(size, dtype=np.float32)
    with open(path, "wb") as fh:
        writer = PngStreamWriter(fh, size, size, 3)
        for y0 in range(0, size, band):
            y = np.arange(y0, min(size, y0 + band), dtype=np.float32)[:, None]
            b = (127 + 120 * np.sin(x / 900.0 + y / 1300.0)).astype(np.uint8)
            g = (127 + 120 * np.cos(x / 700.0 - y / 500.0)).astype(np.uint8)
            r = ((x[None, :] * 7 + y * 3) % 256).astype(np.uint8)
            writer.write(np.dstack(np.broadcast_arrays(b, g, r)).astype(np.uint8))
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--tile", type=int, default=2048)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgstream-tiles-"))
    try:
        src = work / "src"
        src.mkdir()
        big = src / "big.png"
        t = time.perf_counter()
        make_image(big, args.size)
        print(
            f"made {args.size}x{args.size} RGB PNG ({big.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - t:.1f}s"
        )
        for spec in ("gray", "blur:k=5"):
            op = "gray" if spec == "gray" else "blur"
            proc = subprocess.run(
                [sys.executable, "-c", ONE_PROCESS, str(big), str(work / "one.png"), op],
                capture_output=True,
                text=True,
                check=True,
            )
            one_s, one_mb = (float(v) for v in proc.stdout.split())
            out = work / f"out-{op}"
            t = time.perf_counter()
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "imgstream.cli",
                    "run",
                    str(src),
                    "--out",
                    str(out),
                    "--ops",
                    spec,
                    "--tile",
                    str(args.tile),
                    "--workers",
                    "2",
                    "--threads",
                    "1",
                ],
                capture_output=True,
                text=True,
            )
            run_s = time.perf_counter() - t
            if run.returncode != 0:
                raise SystemExit(run.stdout + run.stderr)
            producer_mb = float(re.search(r"peaked at (\d+) MB", run.stdout).group(1))
            worker_mb = [
                float(m.group(1))
                for log in sorted((out / "logs").glob("worker-*.log"))
                for m in re.finditer(r"peak memory (\d+) MB", log.read_text())
            ]
            print(f"\n{spec}:")
            print(f"  (a) one process     {one_s:7.1f} s   peak {one_mb:7.0f} MB")
            print(
                f"  (b) tiles, 2 workers{run_s:7.1f} s   run process (producer + aggregator) "
                f"peak {producer_mb:.0f} MB; workers peak "
                + ", ".join(f"{m:.0f} MB" for m in worker_mb)
            )
            shutil.rmtree(out, ignore_errors=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\nthis script's peak: {peak:.0f} MB; cores: {os.cpu_count()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
