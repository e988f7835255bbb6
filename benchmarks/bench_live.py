"""Live latency and memory soak: one worker fed refs at a steady rate, like ``capture``.

Starts the embedded broker and one ``imgstream work`` (gray), then produces a
ref to one of a set of generated 1080p JPEGs every 1/RATE seconds for
DURATION seconds (refs stamped with their produce time, as capture stamps
frames). Reports the end-to-end latency of the results (p50/p99, from the
ref's timestamp until the result is read back from the results topic)
against the bound ``--max-wait + per-image cost +
50 ms``, and the worker's RSS sampled every few seconds (first, last, min,
max, and the spread of the second half against its mean: "flat" is within
±10%).

    python benchmarks/bench_live.py [--rate 20] [--duration 60] [--max-wait 0.1]

For the 20-minute soak at 80% load: ``--duration 1200 --rate R`` with R at
0.8 x the measured capacity (``make bench`` prints the steady-state rate).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_gray import STAGES, make_set  # benchmarks/ is on sys.path: run as a script

from imgstream.broker import EmbeddedBroker
from imgstream.kafka_io import KafkaSink, TopicReader, ensure_topics
from imgstream.schema.codec import encode
from imgstream.schema.decoding import decode_record
from imgstream.schema.records import ImageRef, Result


def rss_mb(pid: int) -> float | None:
    """The resident set of a process in MB (Linux), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def delivered_s(record: Result) -> float:
    """Seconds from the ref's timestamp to this record being read back from the results topic.

    The record's own ``latency_ms`` stops when the worker makes it; this one
    also counts the produce request (linger included) and the fetch.
    """
    return (time.time() * 1000.0 - record.ts) / 1000.0  # a result's ts is its ref's


def consume_output(record: Result) -> None:
    """Take the output away, as a downstream consumer would.

    A soak at 80% load writes ~60 MB/s of PNGs for 20 minutes: more than this
    VM's disk takes (~30 MB/s sustained) or holds. Removed within seconds, the
    files never reach the disk, and the soak measures the worker.
    """
    if record.output_uri:
        with contextlib.suppress(OSError):
            os.unlink(record.output_uri)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="refs per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of producing")
    parser.add_argument("--max-wait", type=float, default=0.1, help="worker --max-wait")
    parser.add_argument("--images", type=int, default=32, help="distinct frames, reused")
    parser.add_argument("--rss-every", type=float, default=5.0)
    parser.add_argument(
        "--bootstrap",
        default=None,
        help="Use this Kafka (e.g. `make kafka`) instead of the embedded broker, whose "
        "in-memory topics slow down as they grow (a long soak measures that instead).",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgstream-live-"))
    src = work / "in"
    make_set(src, args.images)
    frames = sorted(src.iterdir())
    with contextlib.ExitStack() as stack:
        b = args.bootstrap or stack.enter_context(EmbeddedBroker()).bootstrap
        run = f"live-{int(time.time())}"  # fresh topics and group on a broker that stays up
        refs, results, dlq = f"{run}.refs", f"{run}.results", f"{run}.dlq"
        ensure_topics(b, {refs: 2, results: 2, dlq: 1})
        cmd = [sys.executable, "-m", "imgstream.cli", "work", "--bootstrap", b]
        cmd += ["--out", str(work / "out"), "--root", str(src), "--ops", "gray"]
        cmd += ["--topic", refs, "--results-topic", results, "--dlq-topic", dlq]
        cmd += ["--max-wait", str(args.max_wait), "--group", run]
        log = open(work / "worker.log", "wb")  # noqa: SIM115 (closed below)
        worker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        reader = TopicReader(b, [results], fetch_max_wait_ms=10)  # a latency-minded reader
        sink = KafkaSink(b, "bench-live")
        # The clock starts once the worker holds its partitions (join included in start-up).
        deadline = time.monotonic() + 120
        while b"partitions assigned: live" not in (work / "worker.log").read_bytes():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("the worker did not join")
            time.sleep(0.1)
        rss: list[tuple[float, float]] = []
        latencies: list[float] = []
        costs: list[float] = []
        made: list[float] = []  # until the worker made the record (its latency_ms)
        waits: list[float] = []  # queued, before an image thread took it
        started = time.monotonic()
        next_rss = started
        sent = 0
        try:
            while True:
                now = time.monotonic()
                if now - started >= args.duration:
                    break
                due = int((now - started) * args.rate)
                while sent < due:
                    path = frames[sent % len(frames)]
                    ref = ImageRef(f"f{sent:07d}", str(path), int(time.time() * 1000))
                    sink.send(refs, ref.id.encode(), encode(ref), lambda _e: None)
                    sent += 1
                if now >= next_rss:
                    value = rss_mb(worker.pid)
                    if value is not None:
                        rss.append((now - started, value))
                    next_rss += args.rss_every
                for msg in reader.poll(0.01):
                    record = decode_record(msg.value)
                    if isinstance(record, Result):
                        consume_output(record)
                        latencies.append(delivered_s(record))
                        made.append(record.latency_ms / 1000.0)
                        waits.append(record.timings.get("wait", 0.0))
                        costs.append(sum(record.timings.get(s, 0.0) for s in STAGES))
            sink.flush(10.0)
            deadline = time.monotonic() + 30
            while len(latencies) < sent and time.monotonic() < deadline:
                for msg in reader.poll(0.1):
                    record = decode_record(msg.value)
                    if isinstance(record, Result):
                        consume_output(record)
                        latencies.append(delivered_s(record))
        finally:
            worker.terminate()
            worker.wait(30)
            log.close()
            reader.close()
            sink.close()
            shutil.rmtree(work, ignore_errors=True)
    print(
        "first and last latencies (ms):",
        [round(x * 1000) for x in latencies[:12]],
        "...",
        [round(x * 1000) for x in latencies[-5:]],
    )
    latencies.sort()
    if not latencies:
        raise SystemExit("no results")
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    cost = statistics.median(costs) if costs else 0.0
    bound = args.max_wait + cost + 0.05
    print(f"rate {args.rate:g}/s for {args.duration:g} s: {sent} refs, {len(latencies)} results")
    for name, xs in (("made (record latency_ms)", made), ("queued for a thread", waits)):
        xs = sorted(xs)
        if xs:
            print(
                f"{name}: p50 {xs[len(xs) // 2] * 1000:.0f} ms, "
                f"p99 {xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000:.0f} ms"
            )
    print(
        f"latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; bound --max-wait "
        f"{args.max_wait:g} s + per-image {cost * 1000:.0f} ms + 50 ms = {bound * 1000:.0f} ms "
        f"({'within' if p99 <= bound else 'over'})"
    )
    if rss:
        values = [v for _t, v in rss]
        half = values[len(values) // 2 :]
        mean = statistics.fmean(half)
        spread = max(abs(v - mean) for v in half) / mean if mean else 0.0
        print(
            f"worker RSS MB: first {values[0]:.0f}, last {values[-1]:.0f}, min {min(values):.0f}, "
            f"max {max(values):.0f}; second half within ±{spread:.1%} of its mean "
            f"({'flat' if spread <= 0.10 else 'not flat'})"
        )


if __name__ == "__main__":
    main()
