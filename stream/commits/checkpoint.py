"""Checkpoint: all commit bookkeeping of one worker in one object.

What was consumed (arrivals, with their timestamps for the lag in seconds),
what is complete (delivery acknowledgements fed to an
:class:`~imgstream.commits.offsets.OffsetTracker`) and what was committed are kept,
once, by an :class:`OffsetLedger`; when the next commit is due lives here, and
:meth:`Checkpoint.commit` is the one place where they meet. Modelled on Quix
Streams' ``checkpointing/checkpoint.py``. With ``--exactly-once``,
:class:`TransactionalCheckpoint` keeps the same ledger but holds each batch's
records until its commit point and writes them with the offsets in one Kafka
transaction.

Ownership: every attribute belongs to the poll thread. Other threads reach
the checkpoint only through :class:`~imgstream.commits.delivery.Delivery`'s
acknowledgement queue, which :meth:`commit` drains.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from imgstream.clock import Clock
from imgstream.commits.delivery import Delivery
from imgstream.commits.offsets import OffsetTracker
from imgstream.commits.snapshots import StateSnapshots
from imgstream.commits.transactions import SealedBatch, Staged, Staging, transaction_plan
from imgstream.errors import ImgstreamError, TransactionFailed
from imgstream.schema.records import Message, TopicPartition

if TYPE_CHECKING:
    from imgstream.commits.delivery import Sink
    from imgstream.commits.snapshots import StateStore
    from imgstream.commits.transactions import Transactor
    from imgstream.config import WorkerConfig
    from imgstream.metrics import Metrics
    from imgstream.worker.processor import ImageProcessor

log = logging.getLogger(__name__)

#: Commits are at most this often (seconds): prompt, without a commit per record.
COMMIT_EVERY_S = 0.02
#: Commits of a stateful pipeline (each writes the states that moved) are this often.
STATE_COMMIT_EVERY_S = 1.0

CommitFn = Callable[[dict[TopicPartition, int]], None]


class OffsetLedger:
    """The offset books of one worker: consumed, completed and committed.

    What was consumed (arrivals, with their timestamps for the lag in
    seconds), what is complete (an :class:`~imgstream.commits.offsets.OffsetTracker`),
    what was committed (and the highest ever committed, kept across
    revocations). Both checkpoints are ledgers; they add only *when* and
    *how* the safe points are committed.

    Ownership: every attribute belongs to the poll thread.
    """

    def __init__(self) -> None:
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._arrivals: dict[TopicPartition, collections.deque[tuple[int, int]]] = {}
        self._committed: dict[TopicPartition, int] = {}
        #: The highest offset ever committed per partition (kept across revocations).
        self._highest: dict[TopicPartition, int] = {}
        #: Messages completed since the start.
        self.completed = 0

    def register(self, msg: Message) -> None:
        """A message was consumed: it is in flight until completed."""
        self._tracker.register(msg.tp, msg.offset)
        self._arrivals.setdefault(msg.tp, collections.deque()).append(
            (msg.offset, msg.timestamp_ms)
        )

    def complete(self, tp: TopicPartition, offset: int) -> None:
        """A message needs nothing more."""
        self._tracker.complete(tp, offset)
        self.completed += 1

    def commits_due(self) -> dict[TopicPartition, int]:
        """The safe points that moved since the last commit: below each, all is complete."""
        return self._tracker.commits_due()

    def mark_committed(self, due: dict[TopicPartition, int]) -> None:
        """The broker took these safe points: record them and trim the arrivals below."""
        self._tracker.mark_committed(due)
        self._committed.update(due)
        for tp, point in due.items():
            self._highest[tp] = max(point, self._highest.get(tp, point))
        for tp, point in due.items():
            arrivals = self._arrivals.get(tp)
            while arrivals and arrivals[0][0] < point:
                arrivals.popleft()

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop partitions (revoked): their pending work will not be committed here."""
        tps = list(tps)
        self._tracker.forget(tps)
        for tp in tps:
            self._arrivals.pop(tp, None)
            self._committed.pop(tp, None)

    def drop_pending(self) -> None:
        """Drop everything not committed (the committed offsets stay): it is redone."""
        self._tracker.forget(self._tracker.partitions())
        self._arrivals.clear()

    def partitions(self) -> list[TopicPartition]:
        """Partitions with work being tracked."""
        return self._tracker.partitions()

    def pending(self, tp: TopicPartition) -> set[int]:
        """Offsets of ``tp`` consumed and not complete."""
        return self._tracker.pending(tp)

    def in_flight(self) -> int:
        """Messages consumed and not complete."""
        return self._tracker.in_flight()

    def committed(self, tp: TopicPartition) -> int | None:
        """The last offset committed for a partition (next to read), if any."""
        return self._committed.get(tp)

    def highest_committed(self, tp: TopicPartition) -> int | None:
        """The highest offset committed for ``tp``, even if revoked since."""
        return self._highest.get(tp)

    def oldest_pending_ms(self, tp: TopicPartition) -> int | None:
        """Timestamp of the oldest message of ``tp`` not yet committed, if any."""
        arrivals = self._arrivals.get(tp)
        return arrivals[0][1] if arrivals else None


class Checkpoint(OffsetLedger):
    """Consumed, completed and committed offsets; commits what is safe."""

    def __init__(
        self,
        commit: CommitFn,
        delivery: Delivery,
        clock: Clock,
        on_commit: Callable[[bool], None] | None = None,
        every_s: float = COMMIT_EVERY_S,
        snapshots: StateSnapshots | None = None,
    ) -> None:
        self._commit_fn = commit
        self._snapshots = snapshots
        self._delivery = delivery
        self._clock = clock
        self._on_commit = on_commit
        self._every_s = every_s
        super().__init__()
        self._last_commit = float("-inf")
        self._failed_commits = 0  # in a row, since the last commit that succeeded

    def commit(self, force: bool = False) -> dict[TopicPartition, int]:
        """Commit what is safe; returns the offsets committed (empty if none).

        1. apply delivery acknowledgements (raises a given-up delivery);
        2. compute the safe points: below each, every message is complete;
        3. write the states of a stateful pipeline as of those points, then commit
           them (a failed write or commit is logged and the work redone later);
        4. mark them committed (the states too) and trim the arrivals below them.
        """
        self._delivery.drain(self.complete)
        now = self._clock.monotonic()
        if not force and now - self._last_commit < self._every_s:
            return {}
        due = self.commits_due()
        if not due:
            return {}
        self._last_commit = now
        states = self._snapshots.records(due) if self._snapshots is not None else []
        try:
            if self._snapshots is not None:
                self._snapshots.write(states)  # the states before the offsets they go with
            self._commit_fn(due)
        except Exception as exc:  # e.g. a rebalance in progress: the work is redone
            # the first failure of a run of them is worth a warning; the rest are
            # the same outage (a coordinator moving, a broker restarting)
            self._failed_commits += 1
            report = log.warning if self._failed_commits == 1 else log.debug
            report("offset commit failed: %s (retrying with the next commit)", exc)
            if self._on_commit is not None:
                self._on_commit(False)
            return {}
        if self._failed_commits:
            log.warning("offset commits succeed again after %d failures", self._failed_commits)
            self._failed_commits = 0
        if self._on_commit is not None:
            self._on_commit(True)
        if self._snapshots is not None:
            self._snapshots.committed(states)
        self.mark_committed(due)
        return due


#: Writes a transaction's records and commits its offsets, or raises TransactionFailed.
TransactFn = Callable[[tuple[Staged, ...], dict[TopicPartition, int]], None]


class Rewindable(Protocol):
    """A consumer that can seek back to its committed offsets (the runner's source)."""

    def assignment(self) -> list[TopicPartition]: ...
    def rewind(self, tps: list[TopicPartition]) -> None: ...


class InFlight(Protocol):
    """The batches being processed and sent (the runner's emitter), as a rewind waits."""

    def wait_idle(self, timeout_s: float | None) -> bool: ...
    def pending(self) -> int: ...


class TransactionalCheckpoint(OffsetLedger):
    """The checkpoint of ``--exactly-once``: records and offsets in one transaction.

    The same :class:`OffsetLedger` as :class:`Checkpoint`, but a message completes when
    its batch is *sealed* (its records staged in the
    :class:`~imgstream.commits.transactions.Staging`), and :meth:`commit` writes the
    sealed records and the offsets they make safe in one transaction. When a
    transaction fails, nothing of it is visible and ``rewind_needed`` is set:
    the runner then drops its open batch and calls :meth:`rewind`, which lets
    the in-flight batches finish, drops what is not committed and seeks back
    to the committed offsets.

    Ownership: every attribute belongs to the poll thread; the emitter thread
    reaches it only through the staging's queue of sealed batches.
    """

    def __init__(
        self,
        transact: TransactFn,
        staging: Staging,
        clock: Clock,
        on_commit: Callable[[bool], None] | None = None,
        every_s: float = COMMIT_EVERY_S,
        snapshots: StateSnapshots | None = None,
    ) -> None:
        self._transact = transact
        self._snapshots = snapshots
        self._staging = staging
        self._clock = clock
        self._on_commit = on_commit
        self._every_s = every_s
        super().__init__()
        self._sealed: list[SealedBatch] = []
        self._last_commit = float("-inf")
        #: Set when a transaction failed: the runner must rewind before going on.
        self.rewind_needed = False
        #: Transactions aborted since the start.
        self.aborted = 0

    def commit(self, force: bool = False) -> dict[TopicPartition, int]:
        """Commit the sealed batches in one transaction; returns the offsets committed.

        1. take the sealed batches (dropped while a rewind is pending);
        2. complete their messages and compute the safe points;
        3. write their records, the states of a stateful pipeline as of the safe
           offsets, and the safe offsets in one transaction (a failure aborts it
           and asks for a rewind);
        4. mark the offsets committed and trim the arrivals below them.
        """
        taken = self._staging.take()
        if self.rewind_needed:
            return {}  # work from before the failed transaction: done again after the rewind
        for batch in taken:
            for tp, offset in batch.origins():
                self.complete(tp, offset)
        self._sealed.extend(taken)
        now = self._clock.monotonic()
        if not force and now - self._last_commit < self._every_s:
            return {}
        due = self.commits_due()
        if not due and not self._sealed:
            return {}
        self._last_commit = now
        plan = transaction_plan(self._sealed, due)
        records = plan.records
        states = self._snapshots.records(due) if self._snapshots is not None else []
        if states and self._snapshots is not None:  # in the transaction, with the offsets
            topic = self._snapshots.topic
            staged = [Staged(topic, k, v, None) for k, v in self._snapshots.encoded(states)]
            records = (*records, *staged)
        try:
            self._transact(records, plan.offsets)
        except TransactionFailed as exc:
            log.warning("transaction aborted (%s): rewinding to the committed offsets", exc)
            self.aborted += 1
            self.rewind_needed = True
            if self._on_commit is not None:
                self._on_commit(False)
            return {}
        if self._on_commit is not None:
            self._on_commit(True)
        if self._snapshots is not None:
            self._snapshots.committed(states)
        self._sealed = []
        self.mark_committed(due)
        return due

    def reset(self) -> None:
        """Drop everything not committed (after a failed transaction): it is redone."""
        self._staging.take()
        self._sealed = []
        self.drop_pending()
        self.rewind_needed = False

    def rewind(
        self,
        source: Rewindable,
        in_flight: InFlight,
        watch: Callable[[float], None],
        grace_s: float,
        step_s: float,
    ) -> list[TopicPartition]:
        """After an aborted transaction: go back to the committed offsets; the partitions rewound.

        The batches ``in_flight`` finish first (bounded by ``grace_s``, like a
        revocation; ``watch(now)`` runs every ``step_s`` meanwhile) so none of
        their records can reach a later transaction; then what is not committed
        is dropped (:meth:`reset`) and ``source`` seeks back: those messages are
        read and processed again (outputs are overwritten with identical bytes).
        Raises :class:`~imgstream.errors.ImgstreamError` if they do not finish.
        """
        deadline = self._clock.monotonic() + grace_s
        while not in_flight.wait_idle(step_s):
            now = self._clock.monotonic()
            watch(now)
            if now >= deadline:
                raise ImgstreamError(
                    "could not rewind after an aborted transaction: in-flight batches did "
                    "not finish; restart the worker"
                )
        in_flight.pending()  # raises what the emitter failed with
        self.reset()
        tps = source.assignment()
        source.rewind(tps)
        return tps

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Drop revoked partitions, and every sealed batch that answers one of them."""
        tps = set(tps)
        super().forget(tps)
        self._sealed = [b for b in self._sealed if not any(tp in tps for tp, _ in b.origins())]
        if not self.partitions():
            # nothing left to rewind: a new assignment starts from the committed offsets
            self.rewind_needed = False
            self._sealed = []


def checkpoint_for(
    config: WorkerConfig,
    processor: ImageProcessor,
    source: Committer,
    sink_factory: Callable[[], Sink],
    clock: Clock,
    metrics: Metrics,
    transactor: Transactor | None = None,
    state_store: StateStore | None = None,
) -> tuple[Delivery | Staging, Checkpoint | TransactionalCheckpoint, StateSnapshots | None]:
    """A worker's delivery and checkpoint (transactional with a ``transactor``), and the
    state snapshots of a stateful pipeline that has a ``state_store``."""

    def on_commit(ok: bool) -> None:
        metrics.commits.labels(outcome="ok" if ok else "failed").inc()

    snapshots = None
    if processor.states is not None and state_store is not None:
        snapshots = StateSnapshots(
            processor.states, state_store, processor.outputs, config.out_dir, clock, metrics
        )
    # A stateful pipeline commits (and snapshots its states) once a second.
    every = COMMIT_EVERY_S if snapshots is None else STATE_COMMIT_EVERY_S
    if transactor is None:
        delivery = Delivery(sink_factory, metrics.producer_restarts.inc, clock.monotonic)
        checkpoint = Checkpoint(source.commit, delivery, clock, on_commit, every, snapshots)
        return delivery, checkpoint, snapshots
    staging = Staging()
    transactional = TransactionalCheckpoint(
        transactor.commit, staging, clock, on_commit, every, snapshots
    )
    return staging, transactional, snapshots


class Committer(Protocol):
    """What commits a worker's offsets when there is no transaction (its source)."""

    def commit(self, offsets: dict[TopicPartition, int]) -> None: ...
