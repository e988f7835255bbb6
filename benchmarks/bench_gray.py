"""Benchmark: naive sequential loop vs `imgstream run --ops gray` on the same 1080p JPEGs.

Run on purpose (`make bench`), not in the tests. Both are timed in one run on
one generated set, so the ratio is meaningful on a shared, noisy machine.
After timing, every output of both is checked against
``cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2GRAY)`` and the rates count only
the images whose output exists and is equal: a run that drops or garbles
images does not look fast.

    python benchmarks/bench_gray.py [--n 300] [--workers 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "photos"


def make_set(directory: Path, n: int) -> None:
    """n distinct 1920x1080 JPEGs made from the sample photos (quality 90)."""
    directory.mkdir(parents=True)
    bases = [cv2.imread(str(p)) for p in sorted(PHOTOS.glob("*.jpg"))]
    rng = np.random.default_rng(0)
    for i in range(n):
        img = cv2.resize(bases[i % len(bases)], (1920, 1080), interpolation=cv2.INTER_CUBIC)
        noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        cv2.imwrite(str(directory / f"frame{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


def naive(src: Path, out: Path) -> float:
    """imread -> cvtColor -> imwrite PNG, one image at a time; seconds."""
    out.mkdir()
    started = time.perf_counter()
    for path in sorted(src.iterdir()):
        img = cv2.imread(str(path))
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        cv2.imwrite(str(out / (path.stem + ".png")), gray)
    return time.perf_counter() - started


def reference(path: Path) -> np.ndarray:
    """What every output must equal: OpenCV's BT.601 gray of the decoded input."""
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)


def count_correct(pairs: list[tuple[Path, Path]]) -> tuple[int, list[str]]:
    """How many (input, output) pairs have an output equal to the reference; the problems."""
    ok, problems = 0, []
    for src, out in pairs:
        got = cv2.imread(str(out), cv2.IMREAD_UNCHANGED) if out.exists() else None
        if got is None:
            problems.append(f"{src.name}: no output")
        elif not np.array_equal(got, reference(src)):
            problems.append(f"{src.name}: pixels differ from the reference")
        else:
            ok += 1
    return ok, problems


def naive_pairs(src: Path, out: Path) -> list[tuple[Path, Path]]:
    """(input, expected output path) for the naive loop: one PNG per input."""
    return [(p, out / (p.stem + ".png")) for p in sorted(src.iterdir())]


def imgstream_pairs(src: Path, out: Path) -> list[tuple[Path, Path]]:
    """(input, output) for imgstream, from its result records; a missing one maps to no file."""
    outputs: dict[str, Path] = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "result":
            outputs[Path(record["uri"]).name] = Path(record["output_uri"])
    return [(p, outputs.get(p.name, out / "missing")) for p in sorted(src.iterdir())]


def imgstream(src: Path, out: Path, workers: int, threads: int) -> float:
    """`imgstream run --ops gray` end to end (broker start-up included); seconds."""
    cmd = [
        sys.executable,
        "-m",
        "imgstream.cli",
        "run",
        str(src),
        "--out",
        str(out),
        "--ops",
        "gray",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"imgstream run failed:\n{proc.stdout}\n{proc.stderr}")
    print(proc.stdout)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgstream-bench-"))
    try:
        src = work / "in"
        make_set(src, args.n)
        t_naive = naive(src, work / "naive")
        t_stream = imgstream(src, work / "stream", args.workers, args.threads)
        ok_naive, bad_naive = count_correct(naive_pairs(src, work / "naive"))
        ok_stream, bad_stream = count_correct(imgstream_pairs(src, work / "stream"))
        for label, problems in (("naive", bad_naive), ("imgstream", bad_stream)):
            for problem in problems[:10]:
                print(f"{label}: {problem}")
        a, b = ok_naive / t_naive, ok_stream / t_stream
        print(f"images            {args.n} x 1920x1080 JPEG (cores: {os.cpu_count()})")
        print(f"(a) naive loop    {t_naive:7.2f} s  {a:7.1f} images/s  ({ok_naive} correct)")
        print(
            f"(b) imgstream run {t_stream:7.2f} s  {b:7.1f} images/s  ({ok_stream} correct; "
            f"workers={args.workers}, threads={args.threads}, start-up included)"
        )
        print(f"(b)/(a)           {b / a:.2f}" if a else "(b)/(a)           n/a")
        print("outputs checked against cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2GRAY)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if bad_naive or bad_stream:
        raise SystemExit(f"{len(bad_naive)} naive and {len(bad_stream)} imgstream outputs wrong")


if __name__ == "__main__":
    main()
