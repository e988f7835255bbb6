"""Per-partition completion tracking -> safe commit points.

Messages are registered in the order they are consumed and completed in any
order. The commit point of a partition is one past the highest offset below
which every registered message is complete: work that finishes out of order
never moves a commit past an unfinished message. Pure and single-threaded:
the checkpoint's :class:`~imgstream.commits.checkpoint.OffsetLedger` owns one and
feeds it on the poll thread.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class _Partition:
    __slots__ = ("committed", "done", "pending")

    def __init__(self) -> None:
        # Offsets consumed and not yet complete, and those complete above a gap.
        self.pending: set[int] = set()
        self.done: set[int] = set()
        self.committed: int | None = None  # the next offset to read, as committed


class OffsetTracker(Generic[K]):
    """Tracks pending and completed offsets of many partitions."""

    def __init__(self) -> None:
        self._parts: dict[K, _Partition] = {}

    def register(self, tp: K, offset: int) -> None:
        """A message was consumed and is now in flight."""
        part = self._parts.setdefault(tp, _Partition())
        if offset in part.pending or offset in part.done:
            return  # re-delivered after a seek: still one unit of work
        part.pending.add(offset)

    def complete(self, tp: K, offset: int) -> None:
        """The message's output is stored and its record acknowledged."""
        part = self._parts.get(tp)
        if part is None or offset not in part.pending:
            return  # forgotten partition (revoked) or duplicate completion
        part.pending.discard(offset)
        part.done.add(offset)

    def in_flight(self, tp: K | None = None) -> int:
        """How many registered messages are not complete (for one or all partitions)."""
        if tp is not None:
            part = self._parts.get(tp)
            return len(part.pending) if part else 0
        return sum(len(p.pending) for p in self._parts.values())

    def pending(self, tp: K) -> set[int]:
        """The offsets of ``tp`` registered and not complete (a copy)."""
        part = self._parts.get(tp)
        return set(part.pending) if part else set()

    def commit_point(self, tp: K) -> int | None:
        """The offset that is safe to commit (next to read), or None if nothing is."""
        part = self._parts.get(tp)
        if part is None:
            return None
        low_pending = min(part.pending) if part.pending else None
        safe = [o for o in part.done if low_pending is None or o < low_pending]
        if not safe:
            return part.committed
        return max(safe) + 1

    def commits_due(self) -> dict[K, int]:
        """Commit points that moved since :meth:`mark_committed` was last told."""
        due: dict[K, int] = {}
        for tp, part in self._parts.items():
            point = self.commit_point(tp)
            if point is not None and (part.committed is None or point > part.committed):
                due[tp] = point
        return due

    def mark_committed(self, offsets: dict[K, int]) -> None:
        """The broker accepted these commit points; forget what lies below them."""
        for tp, point in offsets.items():
            part = self._parts.get(tp)
            if part is None:
                continue
            part.committed = point
            part.done = {o for o in part.done if o >= point}

    def forget(self, tps: Iterable[K]) -> None:
        """Drop partitions (revoked): their pending work will not be committed."""
        for tp in tps:
            self._parts.pop(tp, None)

    def partitions(self) -> list[K]:
        """Partitions being tracked."""
        return list(self._parts)
