"""Consumer lag: messages and seconds between the committed offsets and the partitions' ends.

A partition's lag counts from this worker's latest commit, else from the
group's committed offset as read when the partition was assigned (a worker
restarted on a caught-up partition has no lag), else from 0 (nothing was
ever committed: the whole partition is to do). The high-watermark is the one
the last fetch saw (``end_offsets()`` is unreliable on the embedded broker).

Ownership: every attribute belongs to the poll thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from imgstream.clock import Clock
from imgstream.commits.checkpoint import OffsetLedger
from imgstream.metrics import Metrics
from imgstream.schema.records import TopicPartition
from imgstream.worker.source import Source

#: Seconds between updates of the lag gauges.
LAG_EVERY_S = 1.0


class Lag:
    """The lag of the assigned partitions, and its gauges."""

    def __init__(
        self, source: Source, ledger: OffsetLedger, metrics: Metrics, clock: Clock
    ) -> None:
        self._source = source
        self._ledger = ledger
        self._metrics = metrics
        self._clock = clock
        self._last = float("-inf")
        #: Assigned partitions whose group-committed offset is not read yet.
        self._unread: set[TopicPartition] = set()
        #: The group's committed offset of each assigned partition when it was assigned.
        self._group: dict[TopicPartition, int] = {}

    def assigned(self, tps: Iterable[TopicPartition]) -> None:
        """New partitions: their committed offsets are read by :meth:`read_new`."""
        self._unread.update(tps)

    def revoked(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions given up: forget them and remove their gauges."""
        for tp in tps:
            self._unread.discard(tp)
            self._group.pop(tp, None)
            for gauge in (self._metrics.lag, self._metrics.lag_seconds):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))

    def unread(self) -> set[TopicPartition]:
        """Newly assigned partitions whose committed offsets are not read yet."""
        return set(self._unread)

    def read_new(self) -> dict[TopicPartition, int | None]:
        """The group's committed offsets of newly assigned partitions (one request; empty
        when there are none). They stay new until :meth:`loaded`."""
        if not self._unread:
            return {}
        found = self._source.committed(sorted(self._unread))
        for tp, offset in found.items():
            if offset is not None:
                self._group[tp] = offset
        return found

    def loaded(self, tps: Iterable[TopicPartition]) -> None:
        """What the new partitions need was read: they are not new any more."""
        self._unread.difference_update(tps)

    def lags(self) -> list[tuple[TopicPartition, int]]:
        """Messages between the committed offset and the last fetch's high-watermark."""
        out = []
        for tp in self._source.assignment():
            hw = self._source.highwater(tp)
            if hw is not None:
                committed = self._ledger.committed(tp)
                if committed is None:
                    committed = self._group.get(tp, 0)
                out.append((tp, max(0, hw - committed)))
        return out

    def update(self, now: float) -> None:
        """Set the gauges, at most every :data:`LAG_EVERY_S`."""
        if now - self._last < LAG_EVERY_S:
            return
        self._last = now
        wall = self._clock.wall_ms()
        for tp, lag in self.lags():
            oldest = self._ledger.oldest_pending_ms(tp)
            age = (wall - oldest) / 1000.0 if oldest is not None else 0.0
            labels = (tp.topic, str(tp.partition))
            self._metrics.lag.labels(*labels).set(lag)
            self._metrics.lag_seconds.labels(*labels).set(max(0.0, age))
        self._metrics.in_flight.set(self._ledger.in_flight())
