"""Kafka adapters through outages and zombies, against fake kafka-python clients.

A worker cut off from its broker (a network partition) must not die when its
transactional producer has to be replaced: each commit fails with
TransactionFailed until the broker answers, and then a new producer is made.
A producer closed with records it could not send is closed for good (its
I/O thread stopped), not left running. Committed offsets that a zombie's open
transaction holds are waited for (the broker aborts it) rather than failing
the worker after a few seconds. A zombie that has lost its group generation
commits no transaction: the broker would take its offsets unfenced.
"""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.structs import ConsumerGroupMetadata

from imgstream.commits.transactions import TRANSACTION_TIMEOUT_S, Staged
from imgstream.errors import BrokerError, TransactionFailed
from imgstream.kafka_io import clients, transactional
from imgstream.kafka_io.clients import close_producer
from imgstream.kafka_io.source import COMMITTED_TIMEOUT_S, KafkaSource
from imgstream.kafka_io.transactional import KafkaTransactor
from imgstream.schema.records import TopicPartition


class Result:
    """A kafka-python transactional result: done in time, or not."""

    def __init__(self, done: bool) -> None:
        self.done = done

    def wait(self, timeout_ms: int | None = None) -> bool:
        return self.done


class Manager:
    """The producer's transaction manager: commits answer (or time out), aborts are refused."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.committed = 0

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any) -> Result:
        return Result(self.answers)

    def begin_commit(self) -> Result:
        self.committed += self.answers
        return Result(self.answers)

    def has_fatal_error(self) -> bool:
        return not self.answers  # a timed-out transactional request leaves it fatal

    def begin_abort(self) -> Result:
        raise AssertionError("a fatal producer is replaced, not aborted")


class Sender:
    def __init__(self) -> None:
        self.forced = False

    def wakeup(self) -> None:
        pass

    def force_close(self) -> None:
        self.forced = True


class Producer:
    """A KafkaProducer whose close() raises, as kafka-python's does, while records are unsent."""

    def __init__(self, answers: bool = True, unsent: bool = False) -> None:
        self._transaction_manager = Manager(answers)
        self._sender = Sender()
        self.unsent = unsent
        self.closed = False
        self.began = False
        self.sent: list[bytes] = []

    def init_transactions(self) -> None:
        pass

    def begin_transaction(self) -> None:
        self.began = True

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append(value)

    def close(self, timeout: float | None = None) -> None:
        if self.unsent and not self._sender.forced:
            raise KafkaTimeoutError("Timeout waiting for future")
        self.closed = True


class Broker:
    """What ``new_producer`` meets: a broker that answers or one that is out of reach."""

    def __init__(self) -> None:
        self.reachable = True
        self.made: list[Producer] = []
        self.answers = True

    def new_producer(self, *args: Any, **kwargs: Any) -> Producer:
        if not self.reachable:
            raise BrokerError("no broker answers at k:9092 within 10s (--connect-timeout)")
        producer = Producer(self.answers)
        self.made.append(producer)
        return producer


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> Broker:
    b = Broker()
    monkeypatch.setattr(transactional, "new_producer", b.new_producer)
    return b


RECORDS = (Staged("results", b"k", b"v", (TopicPartition("refs", 0), 0)),)
OFFSETS = {TopicPartition("refs", 0): 1}


def test_a_producer_replaced_while_the_broker_is_out_of_reach_comes_back_with_it(
    remote: Broker,
) -> None:
    restarts: list[int] = []
    transactor = KafkaTransactor(
        "k:9092", "tid", lambda: None, on_restart=lambda: restarts.append(1)
    )
    first = remote.made[0]
    # the partition: the commit times out, the producer is fatal, no new one can be made
    first._transaction_manager.answers = False
    remote.reachable = False
    with pytest.raises(TransactionFailed):
        transactor.commit(RECORDS, OFFSETS)
    assert first.closed and restarts == [1]
    with pytest.raises(TransactionFailed, match="no transactional producer yet"):
        transactor.commit(RECORDS, OFFSETS)  # still cut off: no BrokerError, no crash
    remote.reachable = True  # healed
    transactor.commit(RECORDS, OFFSETS)
    assert len(remote.made) == 2 and remote.made[1].sent == [b"v"]
    assert remote.made[1]._transaction_manager.committed == 1
    transactor.close()
    assert remote.made[1].closed


def test_the_first_producer_still_refuses_a_broker_out_of_reach(remote: Broker) -> None:
    remote.reachable = False
    with pytest.raises(BrokerError):
        KafkaTransactor("k:9092", "tid", lambda: None)


def test_a_producer_with_unsent_records_is_closed_for_good() -> None:
    producer = Producer(unsent=True)
    close_producer(producer, 0.5)
    assert producer._sender.forced and producer.closed


def test_a_producer_with_nothing_unsent_closes_gracefully() -> None:
    producer = Producer()
    close_producer(producer, 0.5)
    assert producer.closed and not producer._sender.forced


def test_the_sink_closes_through_close_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = Producer(unsent=True)
    monkeypatch.setattr(clients, "new_producer", lambda *a, **k: producer)
    clients.KafkaSink("k:9092").close(0.1)
    assert producer.closed


class Offsets:
    """A consumer whose committed offsets some partitions never yield (a transaction holds them)."""

    def __init__(self, stable: dict[int, int]) -> None:
        self.stable = stable
        self.waits: list[int] = []

    def committed(self, ktp: Any, timeout_ms: int | None = None) -> int:
        assert timeout_ms is not None
        self.waits.append(timeout_ms)
        if ktp.partition not in self.stable:
            raise KafkaTimeoutError("Timeout waiting for future")
        return self.stable[ktp.partition]


def source_over(consumer: Offsets) -> KafkaSource:
    source = object.__new__(KafkaSource)  # the consumer alone matters here
    source._consumer = consumer
    source._bootstrap, source._settings = "k:9092", None
    return source


def test_committed_offsets_wait_out_a_zombies_transaction() -> None:
    # the broker aborts a stalled transaction after its timeout and a cleanup interval
    assert COMMITTED_TIMEOUT_S > TRANSACTION_TIMEOUT_S + 10
    consumer = Offsets({0: 7, 1: 3})
    got = source_over(consumer).committed([TopicPartition("refs", 0), TopicPartition("refs", 1)])
    assert got == {TopicPartition("refs", 0): 7, TopicPartition("refs", 1): 3}
    assert consumer.waits[0] <= COMMITTED_TIMEOUT_S * 1000
    assert consumer.waits[1] <= consumer.waits[0]  # one deadline for them all


def test_committed_offsets_held_past_the_timeout_say_so() -> None:
    source = source_over(Offsets({0: 7}))
    with pytest.raises(BrokerError, match=r"refs\[1\].*within 2s.*transaction"):
        source.committed([TopicPartition("refs", 0), TopicPartition("refs", 1)], timeout_s=2)


class Member:
    """A consumer whose group metadata is whatever the test sets."""

    def __init__(self, generation: int, member_id: str) -> None:
        self.metadata = ConsumerGroupMetadata("g", generation, member_id)

    def group_metadata(self) -> ConsumerGroupMetadata:
        return self.metadata


def member_source(consumer: Member, member: bool = True) -> KafkaSource:
    source = object.__new__(KafkaSource)
    source._consumer = consumer
    source._member = member
    return source


def test_a_member_out_of_its_group_has_no_metadata_to_commit_with() -> None:
    consumer = Member(4, "m-1")
    source = member_source(consumer)
    assert source.group_metadata().generation_id == 4
    consumer.metadata = ConsumerGroupMetadata("g")  # evicted: kafka-python resets it
    with pytest.raises(TransactionFailed, match="out of its consumer group"):
        source.group_metadata()
    # a reader of fixed partitions never joins: its metadata is what it is
    assert member_source(consumer, member=False).group_metadata().generation_id == -1


def test_a_zombie_sends_nothing(remote: Broker) -> None:
    def evicted() -> Any:
        raise TransactionFailed("this worker is out of its consumer group")

    transactor = KafkaTransactor("k:9092", "tid", evicted)
    with pytest.raises(TransactionFailed):
        transactor.commit(RECORDS, OFFSETS)
    producer = remote.made[0]
    assert not producer.began and producer.sent == [] and not producer.closed
    transactor.commit(RECORDS, {})  # no offsets: no metadata needed
    assert producer.sent == [b"v"]
