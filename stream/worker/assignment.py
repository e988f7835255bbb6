"""NewPartitions: what newly assigned partitions need before any of their messages runs.

The group's committed offsets (for the lag), the start counts of their
uncommitted images (crash isolation, :class:`~imgstream.commits.isolation.CrashGuard`)
and the states of their sources (:class:`~imgstream.commits.snapshots.StateSnapshots`)
are read on the poll thread once ``poll()`` has returned. A broker error
leaves them for the next step, and the partitions' messages wait (deferred)
until then, rather than killing the worker or running without them.

Ownership: every attribute belongs to the poll thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from imgstream.commits.isolation import CrashGuard
from imgstream.commits.snapshots import StateSnapshots
from imgstream.errors import ImgstreamError
from imgstream.schema.records import Message, TopicPartition
from imgstream.worker.lag import Lag

log = logging.getLogger(__name__)


class NewPartitions:
    """Reads what new partitions need; holds back their messages until it is read."""

    def __init__(self, lag: Lag, guard: CrashGuard, snapshots: StateSnapshots | None) -> None:
        self._lag = lag
        self._guard = guard
        self._snapshots = snapshots
        #: Messages of new partitions whose needs could not be read yet.
        self._deferred: list[Message] = []

    @property
    def waiting(self) -> int:
        """Messages held back until their partitions' needs are read."""
        return len(self._deferred)

    def load(self, messages: list[Message]) -> tuple[list[Message], bool]:
        """The messages that may run now, and whether new partitions were loaded (the
        reads may have blocked a while: that time is not idle time)."""
        new = self._lag.unread()
        if new:
            try:
                committed = self._lag.read_new()
                self._guard.assigned(sorted(committed), committed)
                if self._snapshots is not None:
                    self._snapshots.restore(sorted(committed), committed)
            except ImgstreamError as exc:
                if not self._deferred:
                    names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(new))
                    log.warning("cannot read the state of %s yet: %s", names, exc)
                self._deferred += [m for m in messages if m.tp in new]
                return [m for m in messages if m.tp not in new], False
            self._lag.loaded(new)
        if self._deferred:
            messages, self._deferred = self._deferred + messages, []
        return messages, bool(new)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions revoked: their held-back messages go."""
        gone = set(tps)
        self._deferred = [m for m in self._deferred if m.tp not in gone]
