"""Exactly-once policy: staged records, transaction plans, the transactional checkpoint.

The broker side is a fake transactor that keeps what each
successful transaction wrote; a failing one writes nothing, as Kafka's abort.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from imgstream.clock import FakeClock
from imgstream.commits.checkpoint import TransactionalCheckpoint
from imgstream.commits.transactions import (
    SealedBatch,
    Staged,
    Staging,
    transaction_plan,
    transactional_id,
)
from imgstream.errors import ImgstreamError, ProducerFenced, TransactionFailed
from imgstream.metrics import Metrics
from imgstream.schema.decoding import decode_record
from imgstream.schema.records import Failure, Message, Result, TopicPartition
from imgstream.worker.runner import Runner
from tests.unit.test_runner import FakeSink, FakeSource, _setup

TP = TopicPartition("refs", 0)


class Broker:
    """Keeps the records and offsets of committed transactions; fails the ones asked to."""

    def __init__(self, fail: int = 0, error: type[TransactionFailed] = TransactionFailed) -> None:
        self.fail = fail
        self.error = error
        self.records: list[Staged] = []
        self.offsets: dict[TopicPartition, int] = {}
        self.transactions = 0
        self.aborted = 0
        self.closed = False

    def close(self, timeout_s: float = 5.0) -> None:
        self.closed = True

    def commit(self, records: tuple[Staged, ...], offsets: dict[TopicPartition, int]) -> None:
        if self.fail:
            self.fail -= 1
            self.aborted += 1
            raise self.error("the coordinator said no")
        self.transactions += 1
        self.records.extend(records)
        self.offsets.update(offsets)


def _msg(offset: int) -> Message:
    return Message("refs", 0, offset, None, b"{}", 0)


def _stage_batch(staging: Staging, offsets: list[int]) -> None:
    for o in offsets:
        staging.send("results", None, f"r{o}".encode(), (TP, o))
    staging.send("results", None, b"batch", None)
    staging.seal()


def test_transactional_ids_are_per_group_and_worker_and_safe() -> None:
    assert transactional_id("g", "host-12") == "imgstream-g-host-12"
    assert transactional_id("my group", "h/1") == "imgstream-my_group-h_1"
    assert transactional_id("g", "a") != transactional_id("g", "b")


def test_a_plan_keeps_records_below_the_safe_points_and_every_batch_record() -> None:
    batch = SealedBatch(
        (
            Staged("results", None, b"a", (TP, 3)),
            Staged("results", None, b"b", (TP, 4)),
            Staged("results", None, b"batch", None),
        )
    )
    plan = transaction_plan([batch], {TP: 4})
    assert [r.value for r in plan.records] == [b"a", b"batch"]
    assert plan.offsets == {TP: 4} and plan.dropped == 1
    assert transaction_plan([batch], {}).dropped == 2


def test_records_are_held_until_the_commit_point_then_written_with_their_offsets() -> None:
    broker, staging = Broker(), Staging()
    cp = TransactionalCheckpoint(broker.commit, staging, FakeClock())
    for o in range(6):
        cp.register(_msg(o))
    _stage_batch(staging, [0, 1, 2])
    assert broker.records == []  # nothing leaves before the commit point
    assert cp.commit(force=True) == {TP: 3}
    assert [r.value for r in broker.records] == [b"r0", b"r1", b"r2", b"batch"]
    assert broker.offsets == {TP: 3} and broker.transactions == 1
    assert cp.committed(TP) == 3 and cp.in_flight() == 3
    assert cp.commit(force=True) == {}  # nothing sealed, nothing due: no empty transaction
    assert broker.transactions == 1


def test_a_failed_transaction_commits_nothing_and_after_the_rewind_each_record_lands_once() -> None:
    broker, staging = Broker(fail=1), Staging()
    cp = TransactionalCheckpoint(broker.commit, staging, FakeClock())
    for o in range(4):
        cp.register(_msg(o))
    _stage_batch(staging, [0, 1])
    assert cp.commit(force=True) == {}
    assert cp.rewind_needed and cp.aborted == 1 and cp.committed(TP) is None
    _stage_batch(staging, [2, 3])  # in flight when the transaction failed: dropped
    assert cp.commit(force=True) == {}
    cp.reset()
    assert not cp.rewind_needed and cp.in_flight() == 0
    for o in range(4):  # read again from the committed offset
        cp.register(_msg(o))
    _stage_batch(staging, [0, 1])
    _stage_batch(staging, [2, 3])
    assert cp.commit(force=True) == {TP: 4}
    assert Counter(r.value for r in broker.records if r.origin) == {
        b"r0": 1,
        b"r1": 1,
        b"r2": 1,
        b"r3": 1,
    }


def test_skipped_messages_move_the_offsets_in_the_next_transaction() -> None:
    broker, staging = Broker(), Staging()
    cp = TransactionalCheckpoint(broker.commit, staging, FakeClock())
    for o in range(3):
        cp.register(_msg(o))
    cp.complete(TP, 0)
    cp.complete(TP, 1)
    assert cp.commit(force=True) == {TP: 2}
    assert broker.records == [] and broker.offsets == {TP: 2}


def test_revoking_every_partition_drops_its_sealed_batches_and_the_pending_rewind() -> None:
    broker, staging = Broker(fail=1), Staging()
    cp = TransactionalCheckpoint(broker.commit, staging, FakeClock())
    cp.register(_msg(0))
    _stage_batch(staging, [0])
    cp.commit(force=True)
    assert cp.rewind_needed
    cp.forget([TP])
    assert not cp.rewind_needed and cp.in_flight() == 0


class RewindingSource(FakeSource):
    """A fake member that can go back to the offsets committed by transactions."""

    def __init__(self, messages: list[Message], broker: Broker) -> None:
        super().__init__(messages)
        self.all = list(messages)
        self.broker = broker
        self.rewinds = 0

    def rewind(self, tps):
        self.rewinds += 1
        start = self.broker.offsets.get(TP, 0)
        self.pending = [m for m in self.all if m.offset >= start]


def _run(tmp_path, broker: Broker) -> tuple[Runner, RewindingSource, int]:
    config, processor, messages = _setup(tmp_path, n=12)
    source = RewindingSource(messages, broker)
    processor.clock = source.clock
    processor.gate.clock = source.clock
    runner = Runner(config, processor, source, FakeSink, source.clock, Metrics(), None, broker)
    source.bind(runner)
    runner.run()
    return runner, source, len(messages)


def _outcomes(broker: Broker) -> Counter[str]:
    counts: Counter[str] = Counter()
    for r in broker.records:
        record = decode_record(r.value)
        if isinstance(record, (Result, Failure)):
            counts[record.id or f"@{r.origin}"] += 1
    return counts


def test_the_runner_writes_each_outcome_once_across_an_aborted_transaction(tmp_path) -> None:
    broker = Broker(fail=1)
    _runner, source, n = _run(tmp_path, broker)
    assert broker.aborted == 1 and source.rewinds == 1 and broker.closed
    assert broker.offsets == {TP: n}
    counts = _outcomes(broker)
    assert len(counts) == n and set(counts.values()) == {1}


def test_a_fenced_producer_is_rewound_like_an_abort(tmp_path) -> None:
    broker = Broker(fail=2, error=ProducerFenced)
    _runner, source, n = _run(tmp_path, broker)
    assert source.rewinds == 2 and broker.offsets == {TP: n}
    assert set(_outcomes(broker).values()) == {1}


class BlockedBroker(Broker):
    """A transaction that fails after blocking for ``blocked_s`` (a broker away)."""

    def __init__(self, fail: int, blocked_s: float) -> None:
        super().__init__(fail)
        self.blocked_s = blocked_s
        self.clock: FakeClock | None = None

    def commit(self, records: tuple[Staged, ...], offsets: dict[TopicPartition, int]) -> None:
        if self.fail and self.clock is not None:
            self.clock.advance(self.blocked_s)
        super().commit(records, offsets)


def test_a_transaction_blocked_past_idle_exit_is_not_idle_time(tmp_path) -> None:
    """--idle-exit 20 once exited right after the rewind that followed a transaction
    blocked for 25 s (the only broker away), with every message still to read again."""
    broker = BlockedBroker(fail=1, blocked_s=3.0)  # scaled down: 2 s idle, 3 s blocked
    config, processor, messages = _setup(tmp_path, n=12)
    source = RewindingSource(messages, broker)
    broker.clock = source.clock
    processor.clock = source.clock
    processor.gate.clock = source.clock
    config = replace(config, idle_exit_s=2.0)
    runner = Runner(config, processor, source, FakeSink, source.clock, Metrics(), None, broker)
    source.bind(runner)
    runner.run()
    assert broker.aborted == 1 and source.rewinds == 1
    assert broker.offsets == {TP: len(messages)}
    assert set(_outcomes(broker).values()) == {1} and len(_outcomes(broker)) == len(messages)


def test_the_highest_commit_outlives_a_revocation() -> None:
    # replay's end test reads it: Kafka's second join revokes what was just committed
    broker, staging = Broker(), Staging()
    cp = TransactionalCheckpoint(broker.commit, staging, FakeClock())
    cp.register(_msg(0))
    _stage_batch(staging, [0])
    assert cp.commit(force=True) == {TP: 1}
    cp.forget([TP])
    assert cp.committed(TP) is None and cp.highest_committed(TP) == 1


class Stuck:
    """Batches in flight that never finish."""

    def wait_idle(self, timeout_s):
        return False

    def pending(self):
        return 1


def test_a_rewind_gives_up_when_the_batches_in_flight_do_not_finish() -> None:
    broker, staging, clock = Broker(fail=1), Staging(), FakeClock()
    cp = TransactionalCheckpoint(broker.commit, staging, clock)
    cp.register(_msg(0))
    _stage_batch(staging, [0])
    cp.commit(force=True)
    assert cp.rewind_needed
    source = RewindingSource([_msg(0)], broker)
    watched: list[float] = []

    def watch(now: float) -> None:
        watched.append(now)
        clock.advance(1.0)

    with pytest.raises(ImgstreamError, match="could not rewind"):
        cp.rewind(source, Stuck(), watch, grace_s=2.5, step_s=0.05)
    assert len(watched) == 4 and source.rewinds == 0 and cp.rewind_needed
