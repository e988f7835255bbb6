"""Benchmark: a huge image as tiles across 2 workers vs as one image in one process.

Makes a SIZE x SIZE RGB PNG (smooth content, so the file stays small), then
for each pipeline (gray, blur:k=5) times and measures peak memory of:

(a) one process: imread -> op -> imwrite PNG (the whole image in memory),
    the same work as imgstream's op (``cvtColor`` for gray, ``GaussianBlur``
    alone for blur) and OpenCV's default PNG settings, as a user would write it;
(b) ``imgstream run --tile 2048 --workers 2`` end to end (producer cutting
    the tiles, two workers, the aggregator stitching band by band).

The stitched output of (b) must equal the output of (a) pixel for pixel; the
comparison runs after (a) is timed and its peak memory taken, and a mismatch
fails the benchmark.

Run on purpose: ``python benchmarks/bench_tiles.py [--size 20000]``.
"""

from __future__ import annotations

import argparse
import json
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
import cv2, numpy as np
src, dst, op, stitched = sys.argv[1:5]
t = time.perf_counter()
img = cv2.imread(src)
out = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if op == "gray" else cv2.GaussianBlur(img, (5, 5), 0)
cv2.imwrite(dst, out)
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
del img
fused = cv2.imread(stitched, cv2.IMREAD_UNCHANGED)
same = fused is not None and fused.shape == out.shape and np.array_equal(fused, out)
print(elapsed, peak, int(same))
"""


def make_image(path: Path, size: int) -> None:
    """A smooth SIZE x SIZE colour image written band by band (never whole in memory)."""
    from imgstream.io.png import PngStreamWriter

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


def stitched_output(out: Path) -> Path:
    """The parent image's output, from the run's result records (the tiles have ``tile``)."""
    for line in (out / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "result" and not record.get("tile"):
            return Path(record["output_uri"])
    raise SystemExit(f"no stitched result in {out / 'results.jsonl'}")


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
        mismatches = []
        for spec in ("gray", "blur:k=5"):
            op = "gray" if spec == "gray" else "blur"
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
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    ONE_PROCESS,
                    str(big),
                    str(work / "one.png"),
                    op,
                    str(stitched_output(out)),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            one_s, one_mb, same = proc.stdout.split()
            if same != "1":
                mismatches.append(spec)
            print(f"\n{spec}:")
            print(f"  (a) one process     {float(one_s):7.1f} s   peak {float(one_mb):7.0f} MB")
            print(
                f"  (b) tiles, 2 workers{run_s:7.1f} s   run process (producer + aggregator) "
                f"peak {producer_mb:.0f} MB; workers peak "
                + ", ".join(f"{m:.0f} MB" for m in worker_mb)
            )
            print(f"  stitched output {'equals' if same == '1' else 'DIFFERS FROM'} (a)'s")
            shutil.rmtree(out, ignore_errors=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\nthis script's peak: {peak:.0f} MB; cores: {os.cpu_count()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if mismatches:
        raise SystemExit(f"stitched output differs from the one-process output: {mismatches}")


if __name__ == "__main__":
    main()
