"""Exactly-once: the pure policy of one transaction per batch.

With ``--exactly-once`` a worker does not send records as soon as they are
ready. The emitter *stages* a batch's records (results, failures, the batch
record) in a :class:`Staging` and *seals* the batch when its last record is
staged; the poll thread takes the sealed batches at its commit point
(:class:`~imgstream.commits.checkpoint.TransactionalCheckpoint`) and writes their
records together with the offsets they complete in one Kafka transaction
(:mod:`imgstream.kafka_io.transactional`). Either all of it becomes visible
to ``read_committed`` readers and the offsets move, or none of it does and
the worker rewinds to its committed offsets and does the work again.

This module holds what that needs without Kafka: the transactional id, the
staged records, and :func:`transaction_plan`, which picks the records a set
of safe offsets covers. No threads are started, nothing is sent.

Ownership: a :class:`Staging`'s ``_current`` belongs to the emitter thread;
sealed batches cross to the poll thread through ``_sealed`` (a queue).
"""

from __future__ import annotations

import queue
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from imgstream.schema.records import TopicPartition

#: Seconds the broker lets a transaction stay open before aborting it: a worker
#: killed mid-transaction holds back read_committed readers this long at most.
TRANSACTION_TIMEOUT_S = 10.0
#: Seconds a commit or abort may take before the producer is given up and recreated.
COMMIT_TIMEOUT_S = 15.0

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def transactional_id(group: str, worker_id: str) -> str:
    """``imgstream-{group}-{worker_id}``: one per worker process.

    A worker id is ``host-pid`` by default, so a restarted worker gets a new id
    and the broker aborts a dead one's open transaction after
    :data:`TRANSACTION_TIMEOUT_S`; a stable ``worker_id`` fences it at once.
    """
    return _UNSAFE.sub("_", f"imgstream-{group}-{worker_id}")


@dataclass(frozen=True)
class Staged:
    """One record waiting for its batch's transaction.

    ``origin`` is the consumed message it answers (None for a batch record).
    """

    topic: str
    key: bytes | None
    value: bytes
    origin: tuple[TopicPartition, int] | None


@dataclass(frozen=True)
class SealedBatch:
    """Every record of one batch, staged in the order they are to be written."""

    records: tuple[Staged, ...]

    def origins(self) -> list[tuple[TopicPartition, int]]:
        """The consumed messages this batch answers."""
        return [r.origin for r in self.records if r.origin is not None]


@dataclass(frozen=True)
class Plan:
    """What one transaction writes: records, then the offsets they complete."""

    records: tuple[Staged, ...]
    offsets: dict[TopicPartition, int]
    #: Records left out: their message is beyond a safe point (work to redo).
    dropped: int = 0


def transaction_plan(batches: list[SealedBatch], due: Mapping[TopicPartition, int]) -> Plan:
    """The records of ``batches`` that the safe offsets ``due`` cover.

    A record answering a message at or past its partition's safe point is left
    out (its message will be processed again, so writing it now would make a
    duplicate); records answering no message (batch records) always go.
    """
    kept: list[Staged] = []
    dropped = 0
    for batch in batches:
        for record in batch.records:
            if record.origin is not None:
                tp, offset = record.origin
                point = due.get(tp)
                if point is None or offset >= point:
                    dropped += 1
                    continue
            kept.append(record)
    return Plan(tuple(kept), dict(due), dropped)


class Transactor(Protocol):
    """Writes records and commits offsets in one transaction (the Kafka side)."""

    def commit(self, records: tuple[Staged, ...], offsets: dict[TopicPartition, int]) -> None:
        """All or nothing; raise :class:`~imgstream.errors.TransactionFailed` for nothing."""
        ...

    def close(self, timeout_s: float = 5.0) -> None:
        """Release the producer."""
        ...


class Staging:
    """Records held until their batch's transaction (used where Delivery is).

    The emitter calls :meth:`send` per record and :meth:`seal` at the end of
    each batch; the checkpoint takes sealed batches with :meth:`take`.
    """

    def __init__(self) -> None:
        self._current: list[Staged] = []
        self._sealed: queue.SimpleQueue[SealedBatch] = queue.SimpleQueue()

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        origin: tuple[TopicPartition, int] | None,
    ) -> None:
        """Stage a record of the current batch (emitter thread)."""
        self._current.append(Staged(topic, key, value, origin))

    def push(self) -> None:
        """Nothing to hurry: held records leave with their transaction."""

    def seal(self) -> None:
        """The current batch is complete: hand it to the commit point (emitter thread)."""
        if self._current:
            self._sealed.put(SealedBatch(tuple(self._current)))
        self._current = []

    def take(self) -> list[SealedBatch]:
        """Every batch sealed so far, oldest first (poll thread)."""
        out: list[SealedBatch] = []
        while True:
            try:
                out.append(self._sealed.get_nowait())
            except queue.Empty:
                return out

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Nothing is in flight between staging and the transaction: always settled."""
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Nothing to close: the transactional producer belongs to the checkpoint."""
