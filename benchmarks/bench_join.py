"""Time to first result for a fresh ``imgstream work`` joining a busy group.

One member (A) works a live stream of refs (1080p JPEGs at ``--rate``); then a
second ``imgstream work`` (B) is launched and timed from its launch until its
first result is read back from the results topic. B's start-up line breaks the
time down (process start and imports, topics, clients, group join, first
fetch). Each round uses fresh topics and a fresh group on the same broker.

    python benchmarks/bench_join.py [--rounds 3] [--rate 10] [--bootstrap HOST:PORT]

Without ``--bootstrap`` the embedded broker is used: its group coordinator
holds every JoinGroup for half the session timeout (3 s of the 6 s default),
so there the join dominates; Apache Kafka completes a join as soon as every
member has rejoined (at its next heartbeat).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_gray import make_set  # benchmarks/ is on sys.path: run as a script

from imgstream.broker import EmbeddedBroker
from imgstream.kafka_io import KafkaSink, TopicReader, ensure_topics
from imgstream.schema.codec import encode
from imgstream.schema.decoding import decode_record
from imgstream.schema.records import ImageRef, Result

PHASES = ("process", "topics", "clients", "join", "first-fetch")


def wait_for(path: Path, text: bytes, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_bytes():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"{path.name}: no {text.decode()!r} within {timeout_s:g} s")
        time.sleep(0.05)


def one_round(bootstrap: str, work: Path, frames: list[Path], rate: float, n: int) -> dict:
    run = f"join-{n}-{int(time.time())}"
    refs, results, dlq = f"{run}.refs", f"{run}.results", f"{run}.dlq"
    ensure_topics(bootstrap, {refs: 4, results: 2, dlq: 1})
    cmd = [sys.executable, "-m", "imgstream.cli", "work", "--bootstrap", bootstrap]
    cmd += ["--out", str(work / "out"), "--root", str(frames[0].parent), "--ops", "gray"]
    cmd += ["--topic", refs, "--results-topic", results, "--dlq-topic", dlq, "--group", run]
    cmd += ["--max-wait", "0.1"]
    reader = TopicReader(bootstrap, [results], fetch_max_wait_ms=10)
    sink = KafkaSink(bootstrap, "bench-join")
    stop = threading.Event()

    def produce() -> None:
        sent = 0
        started = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate)
            while sent < due:
                frame = str(frames[sent % len(frames)])
                ref = ImageRef(f"r{sent:06d}", frame, int(time.time() * 1000))
                sink.send(refs, ref.id.encode(), encode(ref), lambda _e: None)
                sent += 1
            sink.push()
            time.sleep(0.01)

    logs = [work / f"{run}-a.log", work / f"{run}-b.log"]
    procs: list[subprocess.Popen[bytes]] = []
    producer = threading.Thread(target=produce, daemon=True)
    try:
        with open(logs[0], "wb") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        wait_for(logs[0], b"partitions assigned: join", procs[0], 60)
        producer.start()
        time.sleep(3.0)  # A is busy with the live stream
        launched = time.monotonic()
        with open(logs[1], "wb") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        b_id = f"{socket.gethostname()}-{procs[1].pid}"
        first = None
        deadline = launched + 60
        while first is None and time.monotonic() < deadline:
            for msg in reader.poll(0.05):
                record = decode_record(msg.value)
                if isinstance(record, Result) and record.worker == b_id:
                    first = time.monotonic() - launched
                    break
        if first is None:
            raise SystemExit("B made no result within 60 s")
        wait_for(logs[1], b"start-up:", procs[1], 10)
    finally:
        stop.set()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        if producer.is_alive():
            producer.join(5)
        reader.close()
        sink.close()
    line = re.search(rb"start-up: (.*)", logs[1].read_bytes())
    phases = dict(re.findall(r"([\w-]+) ([\d.]+)s", line.group(1).decode())) if line else {}
    return {"first": first, **{k: float(v) for k, v in phases.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=10.0, help="refs per second, live")
    parser.add_argument("--bootstrap", default=None, help="Apache Kafka instead of embedded")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgstream-join-"))
    make_set(work / "in", 16)
    frames = sorted((work / "in").iterdir())
    rounds = []
    try:
        with contextlib.ExitStack() as stack:
            b = args.bootstrap or stack.enter_context(EmbeddedBroker()).bootstrap
            for n in range(1, args.rounds + 1):
                r = one_round(b, work, frames, args.rate, n)
                rounds.append(r)
                shown = ", ".join(f"{k} {r[k]:.2f}" for k in PHASES if k in r)
                print(f"round {n}: first result {r['first']:.2f} s after launch ({shown})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    broker = "Apache Kafka" if args.bootstrap else "embedded broker"
    med = {k: statistics.median(r[k] for r in rounds if k in r) for k in ("first", *PHASES)}
    print(
        f"fresh `work` joining a busy group ({broker}), median of {len(rounds)}: first result "
        f"{med['first']:.2f} s; " + ", ".join(f"{k} {med[k]:.2f} s" for k in PHASES)
    )


if __name__ == "__main__":
    main()
