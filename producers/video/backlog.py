"""How far the workers are behind each camera, for ``capture --frames latest``.

Every ref a camera sends is remembered (when it was sent, its partition, and
its offset once the broker has acknowledged it) until the worker group's
committed offset of that partition passes it: the group has then stored its
result. With ``--frames latest`` a camera whose workers are ``--max-lag``
seconds behind drops its new frames (counted ``dropped``) instead of
queueing them on the refs topic; once they catch up, the next frame is sent:
the newest one, never one that waited.

"Behind" is the longer of two times: how long the oldest unfinished ref has
waited, and how long a frame sent now would wait, the refs still to do times
the workers' pace on this camera (seconds per frame, from how fast the
group's commits have passed its refs while it had some to do). The first
alone would let a camera send for ``--max-lag`` seconds at its own rate
before noticing, so a worker at half the camera's rate would deliver frames
``2 x --max-lag`` late; with the second, a worker slower than its camera
gets a fresh frame whenever it is ready for one and the end-to-end latency
stays near ``--max-lag`` (plus a batch: the group commits once per batch),
however long the run and however slow the worker.

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


class _Queue:
    """One camera's unfinished refs, oldest first, and the workers' pace on them."""

    __slots__ = ("busy_since", "pending", "per_frame_s")

    def __init__(self, max_pending: int) -> None:
        self.pending: deque[Sent] = deque(maxlen=max_pending)
        #: Since when the workers have had this camera's refs to do without finishing one.
        self.busy_since: float | None = None
        #: Seconds per frame the workers have taken on this camera (a moving average).
        self.per_frame_s: float | None = None


#: Weight of the newest measure in the moving average of the workers' pace.
PACE_WEIGHT = 0.3


class Backlog:
    """The refs each camera sent that the worker group has not committed past.

    Ownership: ``_queues`` is shared by every thread that calls in, under
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
        self._queues: dict[str, _Queue] = {}
        #: Partitions the group has committed an offset on.
        self._followed: set[int] = set()
        #: The cameras whose refs are tracked (those that keep the newest frames).
        self._tracked: set[str] = set()

    def track(self, camera: str) -> None:
        """Track ``camera``'s refs from now on (it runs with ``--frames latest``)."""
        with self._lock:
            self._tracked.add(camera)

    def tracks(self, camera: str) -> bool:
        """Whether ``camera``'s refs are tracked."""
        with self._lock:
            return camera in self._tracked

    def sent(self, camera: str, partition: int, now: float) -> Sent:
        """A ref of ``camera`` goes to ``partition`` at ``now`` (monotonic seconds)."""
        item = Sent(camera, now, partition)
        with self._lock:
            queue = self._queues.get(camera)
            if queue is None:
                queue = self._queues[camera] = _Queue(self.max_pending)
            if not queue.pending:
                queue.busy_since = now
            queue.pending.append(item)
        return item

    def acked(self, item: Sent, offset: int) -> None:
        """The broker stored the ref at ``offset``."""
        with self._lock:
            item.offset = offset

    def failed(self, item: Sent) -> None:
        """The ref was not delivered: no worker will ever finish it."""
        with self._lock:
            queue = self._queues.get(item.camera)
            if queue is not None and item in queue.pending:
                queue.pending.remove(item)

    def committed(self, offsets: Mapping[int, int | None], now: float) -> None:
        """The group's committed offsets (next to read) by partition, read at ``now``:
        forget the refs they passed, and measure the workers' pace on each camera."""
        with self._lock:
            self._followed.update(p for p, offset in offsets.items() if offset is not None)
            for queue in self._queues.values():
                done = 0
                while queue.pending:
                    head = queue.pending[0]
                    upto = offsets.get(head.partition)
                    if head.offset is None or upto is None or head.offset >= upto:
                        break
                    queue.pending.popleft()
                    done += 1
                if not done:
                    continue
                if queue.busy_since is not None:
                    pace = (now - queue.busy_since) / done
                    old = queue.per_frame_s
                    queue.per_frame_s = pace if old is None else old + PACE_WEIGHT * (pace - old)
                queue.busy_since = now if queue.pending else None

    def partitions(self) -> list[int]:
        """The partitions that hold unfinished refs (whose committed offsets matter)."""
        with self._lock:
            return sorted({s.partition for q in self._queues.values() for s in q.pending})

    def pending(self, camera: str) -> int:
        """How many refs of ``camera`` the workers have not finished."""
        with self._lock:
            queue = self._queues.get(camera)
            return len(queue.pending) if queue is not None else 0

    def pace_s(self, camera: str) -> float | None:
        """Seconds per frame the workers take on ``camera`` (None: not measured yet)."""
        with self._lock:
            queue = self._queues.get(camera)
            return queue.per_frame_s if queue is not None else None

    def lag_s(self, camera: str, now: float) -> float:
        """How far the workers are behind ``camera``: the longer of the time its oldest
        unfinished ref has waited and the time a frame sent now would wait (0: none)."""
        with self._lock:
            return self._lag(self._queues.get(camera), now)

    def _lag(self, queue: _Queue | None, now: float) -> float:
        if queue is None or not queue.pending:
            return 0.0
        waited = now - queue.pending[0].at
        ahead = len(queue.pending) * (queue.per_frame_s or 0.0)
        return max(0.0, waited, ahead)

    def too_far_behind(self, camera: str, now: float) -> float | None:
        """The workers' lag on ``camera`` when it is ``max_lag_s`` or more (drop the frame),
        else None (send it). None too while the group has committed nothing on the
        camera's partition."""
        with self._lock:
            queue = self._queues.get(camera)
            if queue is None or not queue.pending:
                return None
            if queue.pending[0].partition not in self._followed:
                return None
            lag = self._lag(queue, now)
        return lag if lag >= self.max_lag_s else None

    def forget(self, camera: str) -> None:
        """``camera`` is gone (removed from the cameras file), or keeps every frame now."""
        with self._lock:
            self._queues.pop(camera, None)
            self._tracked.discard(camera)


def follow_commits(
    backlog: Backlog,
    committed: Callable[[Sequence[int]], Mapping[int, int | None]],
    stopped: Callable[[float], bool],
    now: Callable[[], float],
    every_s: float = FOLLOW_EVERY_S,
) -> None:
    """Feed the group's committed offsets to ``backlog`` every ``every_s`` until stopped.

    ``committed(partitions)`` reads them; ``stopped(seconds)`` waits (True: stop);
    ``now`` is the monotonic clock.
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
        backlog.committed(offsets, now())
