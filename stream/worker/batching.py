"""MicroBatcher: cut a stream of items into batches by count, time or budget.

A batch closes when it holds ``max_batch`` items, ``max_wait_s`` after its
first item arrived, when the next item's cost would take it past
``max_cost`` (a pixel budget, say), or when the caller drains it (partition
revocation, shutdown). The class is pure: no threads, no sleeps, no Kafka.
Time comes in as ``now`` (monotonic seconds) so tests drive it by hand, and
:meth:`seconds_until_due` tells the poll loop how long it may block so that
a time window closes on time even when nothing else arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

#: Why a batch closed (the ``reason`` of batch records and metrics).
SIZE, TIME, BUDGET, REVOKE, SHUTDOWN = "size", "time", "budget", "revoke", "shutdown"
#: A batch of one: an image that may have killed a worker, run alone (crash isolation).
ISOLATE = "isolate"
CLOSE_REASONS = (SIZE, TIME, BUDGET, REVOKE, SHUTDOWN, ISOLATE)


def adaptive_size(backlog: int, cost_per_image_s: float, target_s: float, max_batch: int) -> int:
    """The batch size for a target latency (pure).

    A batch of n takes about n x cost: with a small backlog the batch is as
    large as the backlog and at most what fits in half the target, so latency
    stays low; once the backlog cannot be cleared within the target anyway,
    full batches maximise throughput. An unknown cost (0) allows any size.
    """
    fits = max(1, int(target_s / 2 / cost_per_image_s)) if cost_per_image_s > 0 else max_batch
    if backlog > fits:
        return max_batch
    return max(1, min(backlog, fits, max_batch))


@dataclass(frozen=True)
class Batch(Generic[T]):
    """A closed batch: its items in arrival order and why it closed."""

    items: Sequence[T]
    reason: str
    opened_at: float
    closed_at: float
    cost: int

    def __len__(self) -> int:
        return len(self.items)


class MicroBatcher(Generic[T]):
    """Accumulates items into one open batch at a time."""

    def __init__(self, max_batch: int, max_wait_s: float, max_cost: int | None = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        if max_cost is not None and max_cost < 1:
            raise ValueError("max_cost must be positive")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_cost = max_cost
        self._items: list[T] = []
        self._cost = 0
        self._opened_at: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> Sequence[T]:
        """The open batch's items so far, in arrival order."""
        return tuple(self._items)

    def _close(self, reason: str, now: float) -> Batch[T]:
        assert self._opened_at is not None
        batch = Batch(tuple(self._items), reason, self._opened_at, now, self._cost)
        self._items = []
        self._cost = 0
        self._opened_at = None
        return batch

    def add(self, item: T, now: float, cost: int = 0) -> list[Batch[T]]:
        """Add an item; return the batches this closed (zero, one or two)."""
        closed: list[Batch[T]] = []
        # A window that expired before this item arrived closes without it.
        if self._items and self._due(now):
            closed.append(self._close(TIME, now))
        if self._items and self.max_cost is not None and self._cost + cost > self.max_cost:
            closed.append(self._close(BUDGET, now))
        if not self._items:
            self._opened_at = now
        self._items.append(item)
        self._cost += cost
        if len(self._items) >= self.max_batch:
            closed.append(self._close(SIZE, now))
        return closed

    def _due(self, now: float) -> bool:
        return self._opened_at is not None and now >= self._opened_at + self.max_wait_s

    def poll(self, now: float) -> Batch[T] | None:
        """The open batch if its time window has passed, else None."""
        if self._items and self._due(now):
            return self._close(TIME, now)
        return None

    def seconds_until_due(self, now: float) -> float | None:
        """Seconds until the open batch is due (0 if overdue); None when empty."""
        if self._opened_at is None:
            return None
        return max(0.0, self._opened_at + self.max_wait_s - now)

    def drain(self, now: float, reason: str = SHUTDOWN) -> Batch[T] | None:
        """Close the open batch now, whatever its size; None when empty."""
        if not self._items:
            return None
        return self._close(reason, now)
