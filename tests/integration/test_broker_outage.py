"""The only broker goes away for longer than a record's delivery timeout, and comes back.

A one-node Apache Kafka (``compose/kafka/kraft.py``) is SIGKILLed while a worker
has images running and records on their way, and started again 15 s later.
The worker's records expire meanwhile (``delivery.timeout.ms`` is 4 s here) and
no new producer can be made while no broker answers: the worker must keep
trying (every second, with ``--connect-timeout 2``) instead of giving up, and,
once the broker is back, deliver everything and commit, with nothing lost.
It once exited 4 at the first producer it could not make. With
``--exactly-once`` the open transaction fails after blocking ~15 s, the
worker rewinds to the committed offsets and writes every result exactly once;
it once took the blocked time for idle time and exited (``--idle-exit``) with
all the rewound work left.

Skipped, with the reason, where Java or Maven is missing (a failure under
``IMGSTREAM_REQUIRE_KAFKA=1`` or in CI).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from imgstream.schema.records import ImageRef
from tests.fixtures.cluster import kraft, require_kafka
from tests.fixtures.kafka import Topics

N_IMAGES = 80
OUTAGE_S = 15.0


@pytest.fixture
def lone_kafka(tmp_path: Path) -> Iterator[Any]:
    """One combined KRaft node of the test's own, to kill and start again."""
    require_kafka()
    began = time.monotonic()
    kafka = kraft().KafkaCluster(nodes=1, heap_mb=256, workdir=tmp_path / "kafka")
    kafka.start(timeout_s=180)
    print(f"\none-node Kafka ready in {time.monotonic() - began:.1f}s")
    try:
        yield kafka
    finally:
        kafka.close()


@pytest.mark.parametrize("mode", ["at-least-once", "exactly-once"])
def test_a_worker_rides_out_its_only_broker_being_away(
    mode: str, lone_kafka, background, tmp_path
) -> None:
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(7)
    refs = []
    for i in range(N_IMAGES):
        path = root / f"{i:03d}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
        refs.append(ImageRef(id=f"img-{i:03d}", uri=str(path), ts=int(time.time() * 1000)))
    topics = Topics(lone_kafka.bootstrap, background, partitions=2)
    topics.produce(refs)
    props = tmp_path / "client.properties"
    props.write_text("delivery.timeout.ms=4000\nrequest.timeout.ms=3000\n")
    worker = background(
        *topics.worker_args(tmp_path / "out", root, "--ops", "denoise:h=10"),
        *("--threads", "1", "--max-batch", "4", "--kafka-config", str(props)),
        *("--connect-timeout", "2", "--idle-exit", "15"),
        *(("--exactly-once",) if mode == "exactly-once" else ()),
        name="worker",
    )
    try:
        stream = topics.stream()
        stream.wait_for_count(4, timeout_s=120)  # images running, records flowing
        lone_kafka.kill(1)
        killed = time.monotonic()
        time.sleep(OUTAGE_S)
        assert worker.proc.poll() is None, worker.output()
        lone_kafka.start_node(1)
        print(f"broker away for {time.monotonic() - killed:.1f}s")
        assert worker.wait(300) == 0, worker.output()
        stream.wait_for([r.id for r in refs], timeout_s=60)
        stream.drain()
    finally:
        topics.close()
    log = worker.output()
    results = [r.id for r in stream.records]
    print(f"{len(set(results))} refs, {len(results) - len(set(results))} duplicate records")
    assert set(results) == {r.id for r in refs}
    if mode == "exactly-once":
        assert "rewound" in log, "the outage did not reach the transaction"
        assert len(results) == len(refs)  # read_committed: each once
        return
    assert "could not recreate the producer" in log, "the outage did not reach the delivery"
    assert log.count("could not recreate the producer") == 1  # once per outage, not per try
    assert "recreated the producer after" in log
