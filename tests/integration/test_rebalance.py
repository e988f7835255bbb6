"""A rebalance handler may commit before it gives partitions up.

kafka-python 3.x calls rebalance listeners on its IO thread, where a blocking
commit is refused: the runner's commit on revocation silently failed and every
rebalance redelivered work. This drives two real group members on the
embedded broker and checks that the first one's commit, made while its
partitions are being revoked, reaches the broker.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from imgstream.kafka_io import KafkaSink, KafkaSource, ensure_topics, topic_state
from imgstream.schema.records import TopicPartition
from tests.helpers import wait_until

pytestmark = pytest.mark.both_brokers


class CommitOnRevoke:
    """Commits a fixed offset for each revoked partition, as the runner does."""

    def __init__(self) -> None:
        self.source: KafkaSource | None = None
        self.assigned: list[TopicPartition] = []
        self.revoked: list[list[TopicPartition]] = []
        self.errors: list[BaseException] = []
        self.threads: set[str] = set()

    def on_revoked(self, tps: list[TopicPartition]) -> None:
        self.threads.add(threading.current_thread().name)
        if tps and self.source is not None:
            try:
                self.source.commit({tp: 3 for tp in tps})
            except BaseException as exc:
                self.errors.append(exc)
        self.revoked.append(tps)

    def on_assigned(self, tps: list[TopicPartition]) -> None:
        self.threads.add(threading.current_thread().name)
        self.assigned = tps


def test_commit_made_while_partitions_are_revoked_reaches_the_broker(broker) -> None:
    tag = uuid.uuid4().hex[:8]
    topic, group = f"rebal-{tag}", f"rebal-{tag}"
    ensure_topics(broker.bootstrap, {topic: 2})
    sink = KafkaSink(broker.bootstrap)
    for i in range(10):
        sink.send_partition(topic, i % 2, None, b"x")
    sink.close()

    first = CommitOnRevoke()
    a = KafkaSource(broker.bootstrap, group, [topic], handler=first)
    first.source = a
    wait_until(lambda: a.poll(0.2) is not None and len(first.assigned) == 2, 60, what="assign")

    stop = threading.Event()
    b = KafkaSource(broker.bootstrap, group, [topic], handler=CommitOnRevoke())
    joiner = threading.Thread(target=lambda: [b.poll(0.2) for _ in iter(stop.is_set, True)])
    joiner.start()
    try:
        wait_until(lambda: a.poll(0.2) is not None and bool(first.revoked), 60, what="revocation")
    finally:
        stop.set()
        joiner.join(10)
        a.close()
        b.close()

    assert first.errors == []
    assert "imgstream-rebalance" in first.threads
    states = topic_state(broker.bootstrap, topic, group)
    assert {st.partition: st.committed for st in states} == {0: 3, 1: 3}
