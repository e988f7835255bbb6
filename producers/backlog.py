"""How far the workers are behind each camera, for ``capture --frames latest``.

Every ref a camera sends is remembered (when it was sent, its partition, and
its offset once the broker has acknowledged it) until the worker group's
committed offset of that partition passes it: the group has then stored its
result. The oldest ref a camera still has there is how far behind its
workers are. With ``--frames latest`` a camera more than ``--max-lag``
seconds behind drops its new frames (counted ``dropped``) instead of queueing
them on the refs topic; when the group catches up, the next frame is sent:
the newest one, never one that waited. So a worker slower than its cameras
sees a fresh frame every time it is ready for one, and the end-to-end
latency stays near ``--max-lag`` plus a batch, however long the run.

A partition counts only once the group has committed an offset there: until
a worker of the group has finished something on it (none runs yet, or
``--group`` names no group that reads the topic), nothing is dropped for lag,
so a capture with no workers still records every sampled frame.

:class:`Backlog` is pure bookkeeping: time comes from the caller. The
producer's I/O thread (acknowledgements), :func:`follow_commits` (the group's
committed offsets) and the cameras' threads all call it, under one lock.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger("imgstream.capture")

#: Seconds between two reads of the group's committed offsets.
FOLLOW_EVERY_S = 0.5
#: Refs remembered per camera at most (the oldest are forgotten first): a capture with
#: no worker runs for days. Whatever is left is still far more than --max-lag behind.
MAX_PENDING = 10_000


@dataclass(slots=True)
class Sent:
    """One ref a camera sent that the workers have not finished (yet)."""

    camera: str
    at: float
    partition: int
    #: Set when the broker acknowledges the ref.
    offset: int | None = None


class Backlog:
    """The refs each camera sent that the worker group has not committed past.

    Ownership: ``_pending`` is shared by every thread that calls in, under
    ``_lock``; a :class:`Sent` is changed only under it too.
    """

    def __init__(self, max_lag_s: float, group: str = "", max_pending: int = MAX_PENDING) -> None:
        if max_lag_s <= 0:
            raise ValueError(f"max_lag_s must be positive, got {max_lag_s}")
        self.max_lag_s = max_lag_s
        #: The consumer group followed (for messages).
        self.group = group
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: dict[str, deque[Sent]] = {}
        #: Partitions the group has committed an offset on.
        self._followed: set[int] = set()

    def sent(self, camera: str, partition: int, now: float) -> Sent:
        """A ref of ``camera`` goes to ``partition`` at ``now`` (monotonic seconds)."""
        item = Sent(camera, now, partition)
        with self._lock:
            pending = self._pending.get(camera)
            if pending is None:
                pending = self._pending[camera] = deque(maxlen=self.max_pending)
            pending.append(item)
        return item

    def acked(self, item: Sent, offset: int) -> None:
        """The broker stored the ref at ``offset``."""
        with self._lock:
            item.offset = offset

    def failed(self, item: Sent) -> None:
        """The ref was not delivered: no worker will ever finish it."""
        with self._lock:
            pending = self._pending.get(item.camera)
            if pending is not None and item in pending:
                pending.remove(item)

    def committed(self, offsets: Mapping[int, int | None]) -> None:
        """The group's committed offsets (next to read) by partition: forget what they passed."""
        with self._lock:
            self._followed.update(p for p, offset in offsets.items() if offset is not None)
            for pending in self._pending.values():
                while pending:
                    head = pending[0]
                    done = offsets.get(head.partition)
                    if head.offset is None or done is None or head.offset >= done:
                        break
                    pending.popleft()

    def partitions(self) -> list[int]:
        """The partitions that hold unfinished refs (whose committed offsets matter)."""
        with self._lock:
            return sorted({s.partition for pending in self._pending.values() for s in pending})

    def lag_s(self, camera: str, now: float) -> float:
        """Seconds since the oldest unfinished ref of ``camera`` was sent (0 when none)."""
        with self._lock:
            pending = self._pending.get(camera)
            return max(0.0, now - pending[0].at) if pending else 0.0

    def pending(self, camera: str) -> int:
        """How many refs of ``camera`` the workers have not finished."""
        with self._lock:
            return len(self._pending.get(camera, ()))

    def too_far_behind(self, camera: str, now: float) -> float | None:
        """The workers' lag on ``camera`` when it is ``max_lag_s`` or more (drop the frame),
        else None (send it). None too while the group has committed nothing on the
        camera's partition."""
        with self._lock:
            pending = self._pending.get(camera)
            if not pending or pending[0].partition not in self._followed:
                return None
            lag = now - pending[0].at
        return lag if lag >= self.max_lag_s else None

    def forget(self, camera: str) -> None:
        """``camera`` is gone (removed from the cameras file)."""
        with self._lock:
            self._pending.pop(camera, None)


def follow_commits(
    backlog: Backlog,
    committed: Callable[[Sequence[int]], Mapping[int, int | None]],
    stopped: Callable[[float], bool],
    every_s: float = FOLLOW_EVERY_S,
) -> None:
    """Feed the group's committed offsets to ``backlog`` every ``every_s`` until stopped.

    ``committed(partitions)`` reads them; ``stopped(seconds)`` waits (True: stop).
    A broker that does not answer is logged once, and once again when it
    answers: meanwhile the backlog only grows, so cameras drop frames, as
    they should while no result can be stored.
    """
    failing = False
    while not stopped(every_s):
        partitions = backlog.partitions()
        if not partitions:
            continue
        try:
            offsets = committed(partitions)
        except Exception as exc:
            if not failing:
                log.warning("cannot read the workers' committed offsets: %s", exc)
            failing = True
            continue
        if failing:
            log.info("the workers' committed offsets can be read again")
        failing = False
        backlog.committed(offsets)
