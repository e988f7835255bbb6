"""Exactly-once on Apache Kafka: one result or failure per ref, even across a SIGKILL.

Two workers with ``--exactly-once`` share 2,000 refs; one is SIGKILLed in
the middle of the run and restarted. The results and DLQ topics, read with
``isolation.level=read_committed`` by librdkafka (confluent-kafka, a client
that is not the one that wrote them), hold exactly one result or failure
record per ref id: the killed worker's open transaction is aborted by the
broker, and its uncommitted messages are processed again by a transaction
that commits. ``run --exactly-once --bootstrap`` works end to end, and on
the embedded Tansu broker ``--exactly-once`` is refused (exit 2, one line);
``replay --exactly-once`` writes each ref of its range once.

Kafka only (``kafka_only``: Tansu's transactions are unreliable, which is
what the last test checks, on Tansu), on the session's brokers
(``tests/fixtures/cluster.py``).
"""

from __future__ import annotations

import collections
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imgstream.broker import EmbeddedBroker
from imgstream.schema.decoding import decode_record
from imgstream.schema.records import Failure, ImageRef, Result
from tests.fixtures.cluster import Broker
from tests.fixtures.kafka import Topics
from tests.fixtures.processes import Background
from tests.helpers import refs_for, write_images

N_REFS = 2000


#: Why these tests cannot run on Tansu.
KAFKA_ONLY = pytest.mark.kafka_only("transactions: Tansu accepts them but does not keep them")


@pytest.fixture
def kafka(broker: Broker) -> str:
    """The session's Apache Kafka (the tests asking for it are marked kafka_only)."""
    return broker.bootstrap


def read_committed(bootstrap: str, topics: list[str], timeout_s: float = 120) -> list[Any]:
    """Every record of ``topics`` that a read_committed librdkafka consumer sees.

    Reads until its position reaches every partition's high-watermark (control
    markers take offsets no record is read at), so it also waits for open
    transactions to be committed or aborted.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"eos-check-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = consumer.list_topics(timeout=30)
        tps = [TopicPartition(t, p, 0) for t in topics for p in sorted(meta.topics[t].partitions)]
        consumer.assign(tps)
        ends = {
            (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=30)[1]
            for tp in tps
        }
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while True:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                records.append(decode_record(msg.value()))
            positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(tps)}
            if all(positions[tp] >= end for tp, end in ends.items() if end > 0):
                return records
            assert time.monotonic() < deadline, f"read_committed stopped at {positions} < {ends}"
    finally:
        consumer.close()


def outcomes(records: list[Any]) -> collections.Counter[str]:
    """How many result or failure records each ref id has."""
    return collections.Counter(
        r.id for r in records if isinstance(r, (Result, Failure)) and r.id is not None
    )


@KAFKA_ONLY
def test_two_workers_one_killed_write_exactly_one_record_per_ref(
    kafka: str, tmp_path: Path, background: Callable[..., Background]
) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    refs = refs_for(write_images(root, N_REFS, size=(24, 32)))
    topics = Topics(kafka, background, partitions=4)
    try:
        _kill_one_of_two(topics, refs, root, out)
    finally:
        topics.close()


def _kill_one_of_two(topics: Topics, refs: list[ImageRef], root: Path, out: Path) -> None:
    topics.produce(refs)
    flags = ("--exactly-once", "--max-batch", "8", "--idle-exit", "20")
    first = topics.start_worker(out, root, *flags)
    second = topics.start_worker(out, root, *flags)
    stream = topics.stream()
    stream.wait_for_count(N_REFS // 4, timeout_s=300)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    stream.wait_for_count(N_REFS // 2, timeout_s=300)
    restarted = topics.start_worker(out, root, *flags)
    stream.wait_for_count(N_REFS, timeout_s=600)
    for worker in (second, restarted):
        assert worker.wait(180) == 0, worker.output()
    counts = outcomes(read_committed(topics.bootstrap, [topics.results, topics.dlq]))
    assert set(counts) == {r.id for r in refs}
    twice = {i: n for i, n in counts.items() if n != 1}
    assert twice == {}, f"{len(twice)} ids with more than one record: {list(twice.items())[:10]}"
    assert "Traceback" not in second.output() + restarted.output()


@KAFKA_ONLY
def test_run_exactly_once_on_kafka_processes_a_folder(
    kafka: str, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    write_images(root, 30, size=(24, 32))
    tag = f"{time.monotonic_ns()}"
    proc = run_cli(
        "run",
        str(root),
        "--out",
        str(out),
        "--bootstrap",
        kafka,
        "--exactly-once",
        "--workers",
        "2",
        "--topic",
        f"refs-{tag}",
        "--results-topic",
        f"results-{tag}",
        "--dlq-topic",
        f"dlq-{tag}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = (out / "results.jsonl").read_text().splitlines()
    ids = collections.Counter(
        json.loads(line)["id"] for line in lines if json.loads(line).get("kind") == "result"
    )
    assert len(ids) == 30 and set(ids.values()) == {1}
    assert len(list(out.rglob("*.png"))) >= 30


@KAFKA_ONLY
def test_replay_exactly_once_writes_each_ref_of_the_range_once(
    kafka: str, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    refs = refs_for(write_images(root, 40, size=(24, 32)))
    topics = Topics(kafka, partitions=2)
    try:
        topics.produce(refs)
        proc = run_cli(
            "replay",
            "--bootstrap",
            kafka,
            "--topic",
            topics.refs,
            "--results-topic",
            topics.results,
            "--dlq-topic",
            topics.dlq,
            "--from",
            "0",
            "--out",
            str(out),
            "--root",
            str(root),
            "--max-batch",
            "4",
            "--exactly-once",
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "replayed    40 refs in range" in proc.stdout
        counts = outcomes(read_committed(kafka, [topics.results, topics.dlq]))
        assert counts == {r.id: 1 for r in refs}
    finally:
        topics.close()


def test_exactly_once_is_refused_on_the_embedded_broker(
    tansu_broker: EmbeddedBroker, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    write_images(root, 2)
    proc = run_cli("run", str(root), "--out", str(tmp_path / "out"), "--exactly-once")
    assert proc.returncode == 2
    assert "unreliable" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    # a Tansu given as --bootstrap (recognised by its cluster id), to a worker and to run
    out = str(tmp_path / "out")
    for args in (
        ("work", "--bootstrap", tansu_broker.bootstrap, "--out", out, "--root", str(root)),
        ("run", str(root), "--bootstrap", tansu_broker.bootstrap, "--out", out),
    ):
        proc = run_cli(*args, "--exactly-once")
        assert proc.returncode == 2, proc.stderr
        assert "unreliable" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out" / "logs").exists()  # refused before any worker started
