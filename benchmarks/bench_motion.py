"""Stateful motion on 8 sources through one worker: throughput, latency, snapshots, restore.

Eight sources are eight stretches of a real video of people walking (OpenCV's
``vtest.avi``: ``make vtest``). Refs are keyed by source (one partition per
source's frames) and produced at ``--rate`` frames/s in all, interleaved, as
live cameras would. One ``imgstream work --ops motion`` processes them:

- frames/s over the run and p50/p99 latency (result time minus the ref's ts);
- the same frames with a source per frame (no order to keep; but every frame
  is its source's first, so the op skips the contours, and every frame's
  state is snapshotted: at saturation the snapshots, not the order, set the
  pace, so this row shows what many small sources cost, not order alone);
- the state snapshot size per source (the worker's
  ``imgstream_state_snapshot_bytes`` over the sources it wrote) and the restore
  time of a second worker after the first one is SIGKILLed mid-run
  ("restored the state of N source(s) in S").

    python benchmarks/bench_motion.py [--frames 60] [--rate 40] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from imgstream.broker import EmbeddedBroker
from imgstream.kafka_io import KafkaSink, TopicReader, ensure_topics
from imgstream.partitioning import BySource
from imgstream.schema.codec import encode
from imgstream.schema.decoding import decode_record
from imgstream.schema.records import ImageRef, Result

VTEST = Path.home() / ".cache" / "imgstream" / "vtest.avi"
SOURCES = 8
PARTITIONS = 8


def frames(folder: Path, per_source: int) -> dict[str, list[Path]]:
    """Eight stretches of the video, every second frame, as JPEGs."""
    cap = cv2.VideoCapture(str(VTEST))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    span = total // SOURCES
    out: dict[str, list[Path]] = {}
    for s in range(SOURCES):
        name = f"cam{s}"
        (folder / name).mkdir(parents=True)
        cap.set(cv2.CAP_PROP_POS_FRAMES, s * span)
        paths = []
        for i in range(per_source * 2):
            ok, frame = cap.read()
            if not ok:
                break
            if i % 2 == 0:
                path = folder / name / f"{i:04d}.jpg"
                cv2.imwrite(str(path), frame)
                paths.append(path)
        out[name] = paths
    return out


def run(bootstrap: str, work: Path, sets: dict[str, list[Path]], rate: float, tag: str,
        kill_at: int | None = None, own_source: bool = False) -> dict[str, float]:  # fmt: skip
    refs, results, dlq = f"{tag}.refs", f"{tag}.results", f"{tag}.dlq"
    ensure_topics(bootstrap, {refs: PARTITIONS, results: 2, dlq: 1})
    cmd = [sys.executable, "-m", "imgstream.cli", "work", "--bootstrap", bootstrap,
           "--out", str(work / "out"), "--root", str(work / "in"), "--ops", "motion",
           "--topic", refs, "--results-topic", results, "--dlq-topic", dlq, "--group", tag,
           "--max-wait", "0.05", "--metrics-port", "0"]  # fmt: skip
    logs = [work / f"{tag}-a.log", work / f"{tag}-b.log"]
    with open(logs[0], "wb") as log:
        worker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    reader = TopicReader(bootstrap, [results], fetch_max_wait_ms=10)
    sink = KafkaSink(bootstrap, "bench-motion")
    partitioner = BySource()
    longest = max(map(len, sets.values()))
    order = [(name, paths[i]) for i in range(longest)
             for name, paths in sets.items() if i < len(paths)]  # fmt: skip
    seen: dict[str, float] = {}
    latencies: list[float] = []
    started = time.monotonic()
    second = None
    try:
        time.sleep(4.0)  # the worker's start-up is not what is measured
        t0 = time.monotonic()
        for k, (name, path) in enumerate(order):
            source = f"{name}-{k}" if own_source else name
            ref = ImageRef(id=f"{name}-{path.stem}", uri=str(path), ts=int(time.time() * 1000),
                           source=source)  # fmt: skip
            part = partitioner.partition(ref, PARTITIONS)
            sink.send_partition(refs, part, source.encode(), encode(ref))
            if kill_at is not None and k == kill_at:
                sink.flush()
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                with open(logs[1], "wb") as log:
                    second = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            _drain(reader, seen, latencies)
            time.sleep(max(0.0, t0 + (k + 1) / rate - time.monotonic()))
        sink.flush()
        deadline = time.monotonic() + 120
        while len(seen) < len(order) and time.monotonic() < deadline:
            _drain(reader, seen, latencies)
        took = max(seen.values()) - t0 if seen else float("nan")
    finally:
        for proc in (worker, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        reader.close()
        sink.close()
    latencies.sort()
    out = {
        "frames": len(seen),
        "frames_s": len(seen) / took,
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "wall_s": time.monotonic() - started,
    }
    restored = re.search(r"restored the state of (\d+) source\(s\) in ([\d.]+)s",
                         logs[1].read_text() if logs[1].exists() else "")  # fmt: skip
    if restored:
        out["restored_sources"] = int(restored.group(1))
        out["restore_s"] = float(restored.group(2))
    return out


def _drain(reader: TopicReader, seen: dict[str, float], latencies: list[float]) -> None:
    for msg in reader.poll(0.01):
        record = decode_record(msg.value)
        if isinstance(record, Result) and record.id not in seen:
            seen[record.id] = time.monotonic()
            latencies.append(time.time() * 1000 - record.ts)


def snapshot_bytes(sets: dict[str, list[Path]]) -> int:
    """One source's motion state as the topic holds it (cur + prev background)."""
    img = cv2.imread(str(next(iter(sets.values()))[0]))
    h, w = img.shape[:2]
    small_h = int(h * 320 / w + 0.5) if w > 320 else h
    return 2 * min(w, 320) * small_h * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames per source")
    parser.add_argument("--rate", type=float, default=40.0, help="refs/s, all sources")
    parser.add_argument("--bootstrap")
    args = parser.parse_args()
    if not VTEST.exists():
        raise SystemExit("vtest.avi is missing: make vtest")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = frames(work / "in", args.frames)
        snapshot = snapshot_bytes(sets)
        broker = None
        bootstrap = args.bootstrap
        if bootstrap is None:
            broker = EmbeddedBroker().start()
            bootstrap = broker.bootstrap
        try:
            tag = f"motion-{int(time.time())}"
            state = run(bootstrap, work, sets, args.rate, tag + "-s")
            free = run(bootstrap, work, sets, args.rate, tag + "-f", own_source=True)
            kill = len(sets) * args.frames // 4
            killed = run(bootstrap, work, sets, args.rate, tag + "-k", kill_at=kill)
        finally:
            if broker is not None:
                broker.stop()
    n = sum(map(len, sets.values()))
    print(f"{SOURCES} sources x {args.frames} frames of vtest.avi (768x576), "
          f"{args.rate:g} refs/s, one worker, --ops motion")  # fmt: skip
    print("| run | frames/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for label, r in (("motion, 8 sources (in order)", state),
                     ("motion, a source per frame (no order, a snapshot each)", free),
                     ("motion, SIGKILL at 1/4, replaced", killed)):  # fmt: skip
        print(f"| {label} | {r['frames_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    print(f"frames: {n}; snapshot per source: {snapshot / 1e3:.0f} kB (cur + prev)")
    if "restore_s" in killed:
        print(f"restore after SIGKILL: {killed['restored_sources']} sources in "
              f"{killed['restore_s'] * 1000:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
