"""Benchmark: megapixels/s per operation on 1080p frames, one thread and the worker's pool.

Run on purpose (`make bench-ops`). Decode and encode are measured as rows of
their own. The pool row runs the same frames on a ThreadPoolExecutor of
``--threads`` workers, as the worker does (OpenCV releases the GIL).

    python benchmarks/bench_ops.py [--frames 8] [--threads 2] [--ops 'gray;blur:k=5;...']
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from imgstream.io.imaging import decode, encode, encode_params
from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "photos"

DEFAULT_SPECS = [
    "gray",
    "equalize",
    "clahe",
    "gamma:g=2.2",
    "normalize",
    "sharpen",
    "resize:w=640",
    "crop:x=100,y=100,w=800,h=600",
    "rotate",
    "flip",
    "blur",
    "median",
    "bilateral",
    "denoise",
    "canny",
    "sobel",
    "laplacian",
    "threshold:method=otsu",
    "threshold:method=adaptive",
    "morph",
    "kmeans",
    "stats",
    "hist",
    "phash",
    "faces",
    "plates",
    "qr",
    "contours",
]


def frames(n: int) -> list[np.ndarray]:
    bases = [cv2.imread(str(p)) for p in sorted(PHOTOS.glob("*.jpg"))]
    return [cv2.resize(bases[i % len(bases)], (1920, 1080)) for i in range(n)]


def rate(fn: Callable[[int], object], n: int, threads: int, mpix: float) -> float:
    """Megapixels/s of fn over n items (best of two runs)."""
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        if threads == 1:
            for i in range(n):
                fn(i)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(fn, range(n)))
        best = min(best, time.perf_counter() - started)
    return n * mpix / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ops", default=";".join(DEFAULT_SPECS), help="specs separated by ;")
    args = parser.parse_args()
    imgs = frames(args.frames)
    n = len(imgs)
    mpix = 1920 * 1080 / 1e6
    jpegs = [bytes(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]) for im in imgs]
    grays = [cv2.cvtColor(im, cv2.COLOR_BGR2GRAY) for im in imgs]
    png = encode_params("png")
    rows: list[tuple[str, Callable[[int], object]]] = [
        ("decode JPEG (imgstream)", lambda i: decode(jpegs[i])),
        (
            "decode JPEG (cv2.imdecode)",
            lambda i: cv2.imdecode(np.frombuffer(jpegs[i], np.uint8), 1),
        ),
        ("encode PNG gray (imgstream)", lambda i: encode(grays[i], "png", png)),
        ("encode PNG gray (cv2.imencode)", lambda i: cv2.imencode(".png", grays[i])),
        ("encode PNG colour (imgstream)", lambda i: encode(imgs[i], "png", png)),
    ]
    registry = build_registry()
    for spec in args.ops.split(";"):
        pipeline = parse_spec(spec, registry)
        rows.append((spec, lambda i, p=pipeline: p.run(imgs[i])))
    print(f"{n} frames of 1920x1080, megapixels/s (best of 2); pool = {args.threads} threads")
    print(f"| {'stage / operation':<32} | {'1 thread':>9} | {'pool':>9} | {'speed-up':>8} |")
    print(f"|{'-' * 34}|{'-' * 11}|{'-' * 11}|{'-' * 10}|")
    for name, fn in rows:
        one = rate(fn, n, 1, mpix)
        pool = rate(fn, n, args.threads, mpix)
        print(f"| {name:<32} | {one:9.1f} | {pool:9.1f} | {pool / one:7.2f}x |")


if __name__ == "__main__":
    main()
