"""Benchmark: the throughput cost of ``--exactly-once`` against at-least-once, on Apache Kafka.

Run on purpose (``make bench-eos``), not in the tests. One single-node Apache
Kafka (``compose/kafka/kraft.py``) serves every run; each set of images is
processed by ``imgstream run --bootstrap KAFKA`` with and without
``--exactly-once``, alternating, ``--rounds`` times, each run on its own
topics and group, so both modes see the same machine in one sitting. A run
counts only if every image has exactly one ``ok`` result. The rate is the
run's own (first ref produced to last record, from its summary), and the
wall time of the whole command is shown beside it.

    python benchmarks/bench_eos.py [--small 1500] [--large 1000] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

KRAFT = Path(__file__).resolve().parent.parent / "compose" / "kafka" / "kraft.py"
RATE = re.compile(r"^time\s+([\d.]+) s\s+([\d.]+) images/s", re.M)
OK = re.compile(r"^ok\s+(\d+)", re.M)


def kraft() -> ModuleType:
    """compose/kafka/kraft.py, imported by path (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("imgstream_bench_kraft", KRAFT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_set(directory: Path, n: int, width: int, height: int) -> None:
    """n distinct random colour PNGs of width x height (fast compression)."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(n * width)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for i in range(n):
        img = np.roll(base, i, axis=1)
        img[0, 0] = (i % 256, (i // 256) % 256, 7)
        cv2.imwrite(str(directory / f"img{i:05d}.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 1])


def run(
    bootstrap: str, src: Path, out: Path, n: int, workers: int, exactly_once: bool
) -> tuple[float, float]:
    """One ``imgstream run``; (images/s from its summary, wall seconds)."""
    tag = uuid.uuid4().hex[:8]
    cmd = [
        sys.executable,
        "-m",
        "imgstream.cli",
        "run",
        str(src),
        "--out",
        str(out),
        "--bootstrap",
        bootstrap,
        "--workers",
        str(workers),
        "--topic",
        f"bench-refs-{tag}",
        "--results-topic",
        f"bench-results-{tag}",
        "--dlq-topic",
        f"bench-dlq-{tag}",
    ]
    if exactly_once:
        cmd.append("--exactly-once")
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    ok = OK.search(proc.stdout)
    rate = RATE.search(proc.stdout)
    if proc.returncode != 0 or ok is None or rate is None or int(ok.group(1)) != n:
        raise SystemExit(f"imgstream run failed:\n{proc.stdout}\n{proc.stderr}")
    shutil.rmtree(out, ignore_errors=True)
    return float(rate.group(2)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1500, help="64x48 PNGs")
    parser.add_argument("--large", type=int, default=1000, help="640x480 PNGs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    k = kraft()
    ok, reason = k.available()
    if not ok:
        raise SystemExit(f"Apache Kafka cannot run here: {reason}")
    work = Path(tempfile.mkdtemp(prefix="imgstream-bench-eos-"))
    cluster = k.KafkaCluster(nodes=1, heap_mb=512, workdir=work / "kafka")
    try:
        sets = [
            (f"{args.small} x 64x48 PNG", work / "small", args.small, 64, 48),
            (f"{args.large} x 640x480 PNG", work / "large", args.large, 640, 480),
        ]
        for _label, path, n, w, h in sets:
            make_set(path, n, w, h)
        cluster.start(timeout_s=120)
        print(f"Apache Kafka {k.kafka_version()} on {cluster.bootstrap}; cores: {os.cpu_count()}")
        lines = []
        for label, path, n, _w, _h in sets:
            rates: dict[bool, list[float]] = {False: [], True: []}
            walls: dict[bool, list[float]] = {False: [], True: []}
            for i in range(args.rounds):
                # alternate which mode goes first, so a warming machine favours neither
                for eos in (False, True) if i % 2 == 0 else (True, False):
                    rate, wall = run(cluster.bootstrap, path, work / "out", n, args.workers, eos)
                    rates[eos].append(rate)
                    walls[eos].append(wall)
                    mode = "exactly-once " if eos else "at-least-once"
                    print(f"  {label}: {mode} {rate:7.1f} images/s  ({wall:5.1f} s wall)")
            alo, eos_rate = statistics.median(rates[False]), statistics.median(rates[True])
            lines.append(
                f"{label:22} at-least-once {alo:7.1f} img/s  exactly-once {eos_rate:7.1f} img/s"
                f"  ratio {eos_rate / alo:.2f}x  (wall {statistics.median(walls[False]):.1f} s"
                f" vs {statistics.median(walls[True]):.1f} s; median of {args.rounds})"
            )
        print(f"workers={args.workers}, one transaction per batch (default --max-batch)")
        for line in lines:
            print(line)
    finally:
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
