"""CrashGuard: the runner's side of crash isolation (see :mod:`imgstream.commits.attempts`).

Every message the runner fetches passes :meth:`CrashGuard.admit`. Ordinary
messages run at once with the others, after :meth:`CrashGuard.started` has
recorded their start counts. A *suspect* (started by an earlier life of a
worker that died) is held back with everything fetched after it; once the
worker is idle, :meth:`CrashGuard.next_alone` hands the runner one suspect to
run alone (its raised count recorded first) or to dead-letter as
``crashed``, and ordinary messages held behind it flow again through
:meth:`CrashGuard.release`.

Without an attempts store (unit tests, replay) nothing is recorded and no
message is ever a suspect.

Ownership: every attribute belongs to the poll thread.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from imgstream.commits.attempts import RUN, AttemptBook, Counts, Verdict
from imgstream.schema.records import Message, TopicPartition

log = logging.getLogger(__name__)

#: Seconds a suspect may wait for the worker to be idle before it is logged.
WAIT_WARN_S = 10.0


class AttemptStore(Protocol):
    """Where start counts live between worker lives (the attempts topic)."""

    def load(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, Counts]: ...
    def record(self, tp: TopicPartition, counts: Mapping[int, int]) -> None: ...
    def close(self, timeout_s: float = 5.0) -> None: ...


class CrashGuard:
    """Holds suspects back and records start counts before images start."""

    def __init__(
        self,
        book: AttemptBook,
        store: AttemptStore | None,
        pending: Callable[[TopicPartition], Iterable[int]],
    ) -> None:
        self.book = book
        self.store = store
        self._pending = pending
        self._held: collections.deque[Message] = collections.deque()
        #: The suspect running alone, until it has finished.
        self.alone: Message | None = None
        self._waiting_since: float | None = None
        self._warned = False

    @property
    def holding(self) -> int:
        """Messages held back behind a suspect."""
        return len(self._held)

    def assigned(
        self, tps: Sequence[TopicPartition], committed: Mapping[TopicPartition, int | None]
    ) -> None:
        """Read the counts of newly assigned partitions (before any of their messages run)."""
        if self.store is None or not tps:
            return
        found = self.store.load(tps)
        for tp in tps:
            self.book.load(tp, found.get(tp, {}), committed.get(tp))
            n = self.book.suspects(tp)
            if n:
                log.warning(
                    "%s[%d]: %d image(s) were in flight when a worker died; "
                    "running them one at a time",
                    tp.topic,
                    tp.partition,
                    n,
                )

    def admit(self, messages: Iterable[Message]) -> list[Message]:
        """The messages that may run now; the others are held (in order)."""
        runnable = []
        for msg in messages:
            if self._held or self.book.verdict(msg.tp, msg.offset) is not RUN:
                self._held.append(msg)
            else:
                runnable.append(msg)
        return runnable

    def waiting(self, now: float, in_flight: int, pending_batches: int) -> None:
        """The worker is not idle yet for the next suspect: say so once if it lasts."""
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since > WAIT_WARN_S and not self._warned:
            self._warned = True
            log.warning(
                "waiting %.0fs to run a suspect alone: %d message(s) in flight, %d held, "
                "%d batch(es) being sent",
                now - self._waiting_since,
                in_flight,
                len(self._held),
                pending_batches,
            )

    def release(self) -> list[Message]:
        """Held messages that may run now: those before the next suspect."""
        out = []
        while self._held and self.book.verdict(self._held[0].tp, self._held[0].offset) is RUN:
            out.append(self._held.popleft())
        return out

    def next_alone(self) -> tuple[Message, Verdict] | None:
        """The next suspect and what to do with it (call only when the worker is idle)."""
        self._waiting_since, self._warned = None, False
        if self.alone is not None:
            self.book.settle(self.alone.tp, self.alone.offset)
            self.alone = None
        if not self._held:
            return None
        msg = self._held[0]
        verdict = self.book.verdict(msg.tp, msg.offset)
        if verdict is RUN:
            return None
        self._held.popleft()
        if verdict.action == "isolate":
            self.started([msg])
            self.alone = msg
            log.warning(
                "%s[%d] offset %d: running alone (attempt %d of at most %d)",
                msg.topic,
                msg.partition,
                msg.offset,
                verdict.attempts + 1,
                self.book.max_attempts,
            )
        else:
            self.book.settle(msg.tp, msg.offset)
            log.error(
                "%s[%d] offset %d: the worker died each of the %d times it ran; dead-lettered",
                msg.topic,
                msg.partition,
                msg.offset,
                verdict.attempts,
            )
        return msg, verdict

    def started(self, messages: Sequence[Message]) -> None:
        """These messages are about to start: record their counts first (one record a
        partition)."""
        if self.store is None or not messages:
            return
        by_tp: dict[TopicPartition, list[int]] = {}
        for msg in messages:
            by_tp.setdefault(msg.tp, []).append(msg.offset)
        for tp, offsets in by_tp.items():
            self.book.start(tp, offsets)
            self.store.record(tp, self.book.counts(tp, self._pending(tp)))

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions revoked: drop their held messages and counts."""
        gone = set(tps)
        self.book.forget(gone)
        self._held = collections.deque(m for m in self._held if m.tp not in gone)
        if self.alone is not None and self.alone.tp in gone:
            self.alone = None

    def drop_held(self) -> None:
        """Forget every held message (a rewind reads them again)."""
        self._held.clear()
        self.alone = None
