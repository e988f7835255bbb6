"""``capture --frames latest`` against ``--frames all`` with a worker slower than the camera.

A live HTTP MPEG-TS stream (Debian's ffmpeg serving a generated clip at its
own pace) is captured at ``--fps`` frames per second into one worker whose
pipeline is a plugin op that sleeps ``--cost`` seconds per image on one
thread: the worker finishes 1/cost frames per second, fewer than the camera
sends. Each mode runs on fresh topics and a fresh group for ``--duration``
seconds; the end-to-end latency of each result (its ``latency_ms``: from the
frame's capture time to the worker's result) is reported over the whole run
and per third of it, with the frames the capture stored, dropped and left
unprocessed on the refs topic when it stopped.

``latest`` keeps the latency flat, near ``--max-lag``; ``all`` lets it grow
with the backlog, by (1 - processed/sent) seconds per second.

    python benchmarks/bench_capture_latest.py [--fps 5] [--cost 0.4] [--duration 30]
        [--max-lag 2] [--max-batch 16] [--modes latest,all]

On this 2-core VM (shared), 30 s, camera 5 frames/s, worker 2.5 frames/s,
worker --max-batch 16 (2 gives the same: latest p50 1.57 s, p99 1.85 s):

    --frames  p50 s  p99 s   p99 by third of the run (s)  stored dropped  done  left
    latest     1.59   1.81    1.71 /  1.78 /  1.81            76      70    72     4
    all        7.71  14.86    8.97 / 14.86 /   -             146       0    72    73

(``-``: no frame of the last third was finished before the capture stopped;
``left``: refs still unprocessed on the topic then.)
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from imgstream.broker import EmbeddedBroker
from imgstream.kafka_io import TopicReader, ensure_topics, topic_state
from imgstream.schema.decoding import decode_record
from imgstream.schema.records import Result

PLUGIN = '''
import time

import imgstream


@imgstream.op("slow")
def slow(img, *, seconds: float = 0.4):
    """Sleep, then pass the image on: a worker slower than its cameras."""
    time.sleep(seconds)
    return img
'''


def install_plugin(site: Path) -> Path:
    """The slow op as an installed distribution in ``site`` (put it on PYTHONPATH)."""
    site.mkdir(parents=True)
    (site / "imgstream_bench_slow.py").write_text(PLUGIN)
    info = site / "imgstream_bench_slow-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: imgstream-bench-slow\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text("[imgstream.ops]\nslow = imgstream_bench_slow\n")
    return site


def make_clip(path: Path, seconds: float = 4.0, fps: int = 25) -> Path:
    """A generated clip (a counter on a changing background), MJPEG in AVI."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    for i in range(int(seconds * fps)):
        frame = np.full((240, 320, 3), (i * 7) % 256, np.uint8)
        cv2.putText(frame, str(i), (40, 120), cv2.FONT_HERSHEY_SIMPLEX, 2, (0, 0, 255), 4)
        writer.write(frame)
    writer.release()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether a socket listens on ``port`` (read from /proc: ffmpeg serves one client)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
            return True
    return False


def serve(clip: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """ffmpeg serving ``clip`` in a loop, at its own pace, as live MPEG-TS over HTTP."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg is needed (make ffmpeg)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/live.ts"
    args = "-nostdin -loglevel error -re -stream_loop -1 -i {} -c:v libx264 -preset ultrafast "
    args += "-tune zerolatency -g 25 -f mpegts -listen 1"
    with open(log, "wb") as out:
        proc = subprocess.Popen([ffmpeg, *args.format(clip).split(), url], stdout=out, stderr=out)
    deadline = time.monotonic() + 20
    while not listening(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"ffmpeg did not listen: {log.read_text()}")
        time.sleep(0.05)
    return proc, url


def start_cli(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 (the child holds it; closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "imgstream.cli", *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
    )


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while text not in (out := log.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{text!r} never came:\n{out}")
        time.sleep(0.1)
    return out


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def run(mode: str, bootstrap: str, work: Path, clip: Path, site: Path, args: argparse.Namespace):
    """One capture in ``mode`` into one slow worker; (latencies by result time, summary)."""
    tag = f"{mode}-{int(time.time())}"
    refs, results, dlq, group = f"{tag}.refs", f"{tag}.results", f"{tag}.dlq", f"{tag}.group"
    ensure_topics(bootstrap, {refs: 4, results: 2, dlq: 1})
    store = work / tag / "frames"
    store.mkdir(parents=True)
    server, url = serve(clip, work / f"{tag}-ffmpeg.log")
    worker_log, capture_log = work / f"{tag}-worker.log", work / f"{tag}-capture.log"
    worker = start_cli(
        [
            *("work", "--bootstrap", bootstrap, "--group", group, "--topic", refs),
            *("--results-topic", results, "--dlq-topic", dlq, "--out", str(work / tag / "out")),
            *("--root", str(store), "--ops", f"slow:seconds={args.cost}", "--threads", "1"),
            *("--max-wait", "0.1", "--max-batch", str(args.max_batch)),
        ],
        worker_log,
        {"PYTHONPATH": str(site)},
    )
    capture = None
    reader = TopicReader(bootstrap, [results], fetch_max_wait_ms=10)
    points: list[tuple[float, float]] = []  # (seconds since the start, latency s)
    try:
        wait_for(worker_log, "partitions assigned", worker)
        capture = start_cli(
            [
                *("capture", url, "--source", "cam", "--fps", str(args.fps)),
                *("--store", str(store), "--bootstrap", bootstrap, "--topic", refs),
                *("--group", group, "--frames", mode, "--max-lag", str(args.max_lag)),
                *("--duration", str(args.duration)),
            ],
            capture_log,
        )
        started_ms = time.time() * 1000
        while capture.poll() is None:
            for msg in reader.poll(0.1):
                record = decode_record(msg.value)
                if isinstance(record, Result) and record.latency_ms is not None:
                    points.append(((record.ts - started_ms) / 1000, record.latency_ms / 1000))
        summary = wait_for(capture_log, "captured ", capture)
        lag = sum(s.lag for s in topic_state(bootstrap, refs, group))
    finally:
        for proc in (capture, worker, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
        reader.close()
    line = next(ln for ln in summary.splitlines() if ln.startswith("captured "))
    stored = int(re.search(r"captured (\d+) frames", line)[1])  # type: ignore[index]
    dropped = re.search(r"(\d+) dropped", line)
    return points, {
        "stored": stored,
        "dropped": int(dropped[1]) if dropped else 0,
        "processed": len(points),
        "left": lag,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second captured")
    parser.add_argument("--cost", type=float, default=0.4, help="worker seconds per frame")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of capture")
    parser.add_argument("--max-lag", type=float, default=2.0, help="capture --max-lag")
    parser.add_argument("--max-batch", type=int, default=16, help="worker --max-batch")
    parser.add_argument("--modes", default="latest,all")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgstream-capture-latest-"))
    clip = make_clip(work / "clip.avi")
    site = install_plugin(work / "site")
    table = []
    try:
        with EmbeddedBroker() as broker:
            for mode in args.modes.split(","):
                points, summary = run(mode, broker.bootstrap, work, clip, site, args)
                thirds = []
                for k in range(3):
                    lo, hi = args.duration * k / 3, args.duration * (k + 1) / 3
                    part = [lat for t, lat in points if lo <= t < hi]
                    thirds.append(percentile(part, 99))
                latencies = [lat for _, lat in points]
                p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
                table.append((mode, p50, p99, thirds, summary))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"camera {args.fps:g} frames/s, worker {1 / args.cost:.2f} frames/s "
        f"({args.cost:g} s each, one thread, --max-batch {args.max_batch}), "
        f"{args.duration:g} s, --max-lag {args.max_lag:g}"
    )
    print(
        f"{'--frames':<8} {'p50 s':>6} {'p99 s':>6}   {'p99 by third of the run (s)':<28} "
        f"{'stored':>6} {'dropped':>7} {'done':>5} {'left':>5}"
    )
    for mode, p50, p99, thirds, s in table:
        # nan: no frame of that third was finished before the capture stopped
        by_third = " / ".join("  -  " if math.isnan(x) else f"{x:5.2f}" for x in thirds)
        print(
            f"{mode:<8} {p50:6.2f} {p99:6.2f}   {by_third:<28} {s['stored']:>6} "
            f"{s['dropped']:>7} {s['processed']:>5} {s['left']:>5}"
        )


if __name__ == "__main__":
    main()
