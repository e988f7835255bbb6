"""Broker failover: two workers ride out a killed leader and a rolling restart of three brokers.

A three-node Apache Kafka (``compose/kafka/kraft.py``, module-scoped); the
refs, results and DLQ topics have three replicas and ``min.insync.replicas=2``,
so one broker may be down at any time without losing an acknowledged record.
Refs are produced at a steady pace while the brokers fail, so the outage
lands mid-run for the producer and both workers alike. Every ref must end up
with a result or a failure, no worker may exit, duplicates stay within the
at-least-once bound, and each worker says once per broker outage that it lost
the broker, and once that it is back (no log flood).

Every wait ends on an event, never on a clock: each test starts from a whole
cluster (three brokers up, every replica of every topic, the internal ones
included, in sync: a broker restarted by the test before may still be
catching up), a rolling restart moves to the next broker once the cluster is
whole again, and records are awaited for as long as they keep coming (only
``STALL_S`` without a new one fails: a slow machine is not a stalled run).

Skipped, with the reason, where Java or Maven is missing (a failure under
``IMGSTREAM_REQUIRE_KAFKA=1`` or in CI). Figures (start-up, recovery,
duplicates) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import collections
import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from imgstream.kafka_io import KafkaSink, ensure_topics
from imgstream.schema.codec import encode
from imgstream.schema.records import Failure, ImageRef
from imgstream.schema.topics import topic_settings
from tests.fixtures.cluster import kraft, require_kafka
from tests.fixtures.kafka import RecordStream
from tests.fixtures.processes import Background
from tests.helpers import wait_until

N_REFS = 2000
N_IMAGES = 100  # refs share files round-robin: their outputs differ by id
MAX_BATCH = 16
REFS_PARTITIONS = 6
#: The link tracker's lines (imgstream.kafka_io.links): one per outage, one per recovery.
LOST = re.compile(r"lost the connection to Kafka broker (\d+)")
BACK = re.compile(r"connected to Kafka broker (\d+) at \S+ again, ([\d.]+) s after")
#: Seconds without a new record after which a run counts as stalled (a broker
#: restarts in 5-15 s on a loaded machine, a rebalance takes a few).
STALL_S = 90.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Three combined KRaft nodes for this module (start-up time printed)."""
    require_kafka()
    began = time.monotonic()
    kafka = kraft().KafkaCluster(
        nodes=3, heap_mb=256, workdir=tmp_path_factory.mktemp("failover") / "kafka"
    )
    kafka.start(timeout_s=180)
    print(f"\nthree-node Kafka ready in {time.monotonic() - began:.1f}s")
    try:
        yield kafka
    finally:
        kafka.close()


@dataclass
class Run:
    """One test's topics, refs, workers and the producer thread that paces the refs."""

    cluster: Any
    root: Path
    out: Path
    refs: list[ImageRef]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workers: list[Background] = field(default_factory=list)
    sent: threading.Event = field(default_factory=threading.Event)
    resent: int = 0
    #: Wall-clock ms the producer spent waiting for the gate (no new work meanwhile).
    idle: tuple[int, int] = (0, 0)

    @property
    def topics(self) -> tuple[str, str, str]:
        """refs, results, dlq."""
        return f"refs-{self.tag}", f"results-{self.tag}", f"dlq-{self.tag}"

    def create_topics(self) -> None:
        """Three replicas, two of them in sync for a write to count."""
        refs, results, dlq = self.topics
        layout = topic_settings(["min.insync.replicas=2"], 3)
        ensure_topics(
            self.cluster.bootstrap,
            {refs: REFS_PARTITIONS, results: 3, dlq: 1},
            roles={refs: "refs", results: "results", dlq: "dlq"},
            layout=layout,
        )

    def worker_args(self) -> tuple[str, ...]:
        refs, results, dlq = self.topics
        return (
            "work",
            "--bootstrap",
            self.cluster.bootstrap,
            "--group",
            f"group-{self.tag}",
            "--topic",
            refs,
            "--results-topic",
            results,
            "--dlq-topic",
            dlq,
            "--out",
            str(self.out),
            "--root",
            str(self.root),
            "--threads",
            "2",
            "--max-batch",
            str(MAX_BATCH),
        )

    def produce(self, seconds: float, held: int, gate: threading.Event) -> threading.Thread:
        """Send the refs (keyed by id) in a thread: all but ``held`` spread over ``seconds``,
        the last ``held`` once ``gate`` is set, so work arrives after the brokers' trouble
        too; then resend what failed."""

        def run() -> None:
            sink = KafkaSink(self.cluster.bootstrap, "failover-test")
            pending = list(self.refs)
            pause = seconds / max(1, (len(pending) - held) // 20)
            hold = held
            try:
                while pending:
                    failed: list[ImageRef] = []
                    for i, ref in enumerate(pending):
                        if i == len(pending) - hold:
                            waited = int(time.time() * 1000)
                            gate.wait()
                            self.idle = (waited, int(time.time() * 1000))
                        sink.send(self.topics[0], ref.id.encode(), encode(ref), ack(ref, failed))
                        if i % 20 == 19:
                            time.sleep(pause)
                    sink.flush()
                    hold = 0
                    self.resent += len(failed)
                    pending, pause = failed, 0.0
            finally:
                sink.close()
                self.sent.set()

        thread = threading.Thread(target=run, name="paced-producer", daemon=True)
        thread.start()
        return thread


def ack(ref: ImageRef, failed: list[ImageRef]) -> Callable[[BaseException | None], None]:
    """A send callback that notes the ref if it was not delivered (list.append is atomic)."""

    def done(exc: BaseException | None) -> None:
        if exc is not None:
            failed.append(ref)

    return done


def in_sync(bootstrap: str, timeout_s: float = 180) -> None:
    """Wait until the cluster is whole: three brokers registered, and every partition of
    every topic (group offsets and transaction state included) with all its replicas in
    sync, as an operator checks between two brokers of a rolling restart."""

    def whole() -> bool:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            brokers = admin.describe_cluster()["brokers"]
            described = admin.describe_topics()
        finally:
            admin.close()
        return len(brokers) == 3 and all(
            t.get("error_code", 0) == 0
            and all(set(p["isr_nodes"]) == set(p["replica_nodes"]) for p in t["partitions"])
            for t in described
        )

    wait_until(whole, timeout_s, interval=0.5, what="every replica of every topic in sync")


def until_records(stream: RecordStream, done: Callable[[], bool], what: str) -> None:
    """Read records until ``done()``; fail only when none has arrived for ``STALL_S``."""
    seen, since = -1, time.monotonic()
    while True:
        stream.poll()
        if done():
            return
        now, count = time.monotonic(), len(stream.records) + len(stream.batches)
        if count != seen:
            seen, since = count, now
        elif now - since >= STALL_S:
            raise AssertionError(
                f"no new record for {STALL_S:.0f}s waiting for {what} "
                f"({len(stream.ids)} ids have a record)"
            )


def leaders(bootstrap: str, topic: str) -> collections.Counter[int]:
    """How many of the topic's partitions each broker leads."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    return collections.Counter(
        p["leader_id"] for p in described["partitions"] if p["leader_id"] >= 0
    )


@pytest.fixture
def run(cluster: Any, write_images: Callable[..., list[Path]], tmp_path: Path) -> Iterator[Run]:
    """2,000 refs over 100 small PNGs, with two refs to missing files and a bad one."""
    root = tmp_path / "in"
    paths = write_images(root, N_IMAGES, size=(48, 64))
    now = int(time.time() * 1000)
    refs = [
        ImageRef(id=f"r{i:05d}", uri=str(paths[i % N_IMAGES]), ts=now, source=f"s{i % 8}")
        for i in range(N_REFS - 3)
    ]
    refs += [ImageRef(id=f"missing{i}", uri=str(root / f"gone{i}.png"), ts=now) for i in (1, 2)]
    (root / "junk.png").write_bytes(b"not a png at all")
    refs.append(ImageRef(id="junk", uri=str(root / "junk.png"), ts=now))
    began = time.monotonic()
    in_sync(cluster.bootstrap)  # a broker the test before restarted may still catch up
    print(f"\ncluster whole {time.monotonic() - began:.1f}s after the test began")
    r = Run(cluster, root, tmp_path / "out", refs)
    r.create_topics()
    yield r


def start_workers(r: Run, background: Callable[..., Background]) -> None:
    r.workers = [background(*r.worker_args(), name=f"worker{i}") for i in (1, 2)]


def both_busy(r: Run, stream: RecordStream, n: int) -> None:
    """Until records for ``n`` ids have arrived, and both workers have closed batches."""
    pids = {f"-{w.pid}" for w in r.workers}

    def done() -> bool:
        busy = {p for p in pids for b in stream.batches if b.worker.endswith(p)}
        return len(stream.ids) >= n and busy == pids

    until_records(stream, done, f"records for {n} ids from both workers")


def finish(r: Run, stream: RecordStream, began: float) -> collections.Counter[str]:
    """Wait for every ref, check the workers ran throughout and exit cleanly; record counts."""
    assert r.sent.wait(180), "the producer did not finish"
    wanted = {ref.id for ref in r.refs}
    until_records(stream, lambda: wanted <= stream.ids, f"every ref ({len(wanted)})")
    print(f"every ref accounted for {time.monotonic() - began:.1f}s after the start")
    for w in r.workers:
        assert w.running(), f"{w.name} exited ({w.returncode}):\n{w.output()}"
    for w in r.workers:
        assert w.stop() == 0, w.output()
    records = stream.drain().records
    failures = {rec.id: rec.error_type for rec in records if isinstance(rec, Failure)}
    assert failures == {
        "missing1": "not_found",
        "missing2": "not_found",
        "junk": "unsupported_format",
    }
    counts = collections.Counter(rec.id for rec in records if rec.id is not None)
    assert set(counts) == {ref.id for ref in r.refs}, "refs lost"
    return counts


def stalls(r: Run, stream: RecordStream) -> dict[str, float]:
    """Per worker, the longest time between two of its batches while it had work to do
    (its recovery time): the producer's wait at the gate, past a 2 s drain, is not counted."""
    quiet_from, quiet_to = r.idle[0] + 2000, r.idle[1]
    out: dict[str, float] = {}
    for w in r.workers:
        times = sorted(b.ts for b in stream.batches if b.worker.endswith(f"-{w.pid}"))
        assert len(times) > 10, f"{w.name} closed only {len(times)} batches"
        gaps = [
            (b - a) - max(0, min(b, quiet_to) - max(a, quiet_from))
            for a, b in itertools.pairwise(times)
        ]
        out[w.name] = max(gaps) / 1000
    return out


def check_logs(r: Run, brokers: list[int]) -> None:
    """Each worker told of each outage once, without flooding its log."""
    for w in r.workers:
        text = w.output()
        lost = LOST.findall(text)
        back = [(b, float(s)) for b, s in BACK.findall(text)]
        lines = text.splitlines()
        print(f"{w.name}: lost {lost}, connected again {back}; {len(lines)} log lines")
        for line in lines:
            if " WARNING " in line or " ERROR " in line:
                print(f"  {line[11:200]}")
        assert lost, f"{w.name} did not say it lost a broker:\n{text}"
        assert len(lost) == len(set(lost)), f"{w.name} repeats itself:\n{text}"
        # A request to a live broker can time out while the cluster elects new
        # leaders (on a loaded machine); kafka-python then closes that link too,
        # and the worker says so once. The stopped brokers must be among them.
        assert {str(b) for b in brokers} & set(lost), text
        # start-up, assignments, the test's bad refs, a rebalance at the end: ~16 lines
        assert len(lines) < 24 + 4 * len(set(lost) | {str(b) for b in brokers}), (
            f"{w.name} floods its log:\n{text}"
        )


def report(name: str, counts: collections.Counter[str], r: Run, stream: RecordStream) -> int:
    duplicates = sum(n - 1 for n in counts.values())
    paused = stalls(r, stream)
    stalled = ", ".join(f"{w} {s:.1f}s" for w, s in paused.items())
    print(
        f"{name}: {len(counts)} refs, {duplicates} duplicates, {r.resent} refs resent by "
        f"the test's producer; longest pause between batches: {stalled}"
    )
    # recovered by themselves: a broker is fenced in 6 s; generous for a loaded machine
    assert max(paused.values()) < 60, paused
    return duplicates


def test_the_leader_of_most_refs_partitions_is_killed_and_restarted(
    cluster: Any, run: Run, background: Callable[..., Background]
) -> None:
    began = time.monotonic()
    refs_topic = run.topics[0]
    led = wait_until(
        lambda: (c := leaders(cluster.bootstrap, refs_topic)).total() == REFS_PARTITIONS and c,
        30,
        what="a leader for every refs partition",
    )
    victim = led.most_common(1)[0][0]
    start_workers(run, background)
    stream = RecordStream(cluster.bootstrap, list(run.topics[1:]))
    try:
        done = threading.Event()
        run.produce(seconds=10, held=200, gate=done)
        both_busy(run, stream, 300)
        cluster.kill(victim)
        killed = time.monotonic()
        time.sleep(3)
        # two replicas of three stay in sync: the work goes on while the JVM starts
        cluster.start_node(victim, wait=False)
        done.set()
        counts = finish(run, stream, began)
        cluster.wait_ready(victim, timeout_s=120)
        print(f"broker {victim} killed, ready again after {time.monotonic() - killed:.1f}s")
    finally:
        stream.close()
    duplicates = report("SIGKILL of the refs leader", counts, run, stream)
    check_logs(run, [victim])
    print(f"test time {time.monotonic() - began:.1f}s")
    # at-least-once: only what was in flight when the leader went is redone; per
    # worker and per event (the kill, the return) that is at most the in-flight
    # batches, one submitted before the pause and the open one
    assert duplicates <= 2 * 2 * 4 * MAX_BATCH + run.resent, duplicates


def test_a_rolling_restart_of_every_broker(
    cluster: Any, run: Run, background: Callable[..., Background]
) -> None:
    began = time.monotonic()
    start_workers(run, background)
    stream = RecordStream(cluster.bootstrap, list(run.topics[1:]))
    try:
        done = threading.Event()
        run.produce(seconds=30, held=300, gate=done)
        both_busy(run, stream, 200)
        for node in cluster.node_ids:
            t = time.monotonic()
            cluster.stop_node(node)
            cluster.start_node(node, timeout_s=180)
            in_sync(cluster.bootstrap)  # as an operator waits before the next
            print(f"broker {node} restarted and in sync in {time.monotonic() - t:.1f}s")
        done.set()
        counts = finish(run, stream, began)
    finally:
        stream.close()
    duplicates = report("rolling restart", counts, run, stream)
    check_logs(run, cluster.node_ids)
    print(f"test time {time.monotonic() - began:.1f}s")
    assert duplicates <= 3 * 2 * 4 * MAX_BATCH + run.resent, duplicates
