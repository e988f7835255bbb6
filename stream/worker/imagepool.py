"""ImagePool: image threads whose timeout counts running time, with stuck threads bounded.

A ``ThreadPoolExecutor`` cannot do what ``--image-timeout`` needs: a job's
clock there starts when someone begins waiting for it (so images still queued
behind others "time out" without having run), and a thread stuck in an
operation can be neither stopped nor replaced (the pool shrinks for good and
shutdown waits for it). Here:

* A job's clock starts when a thread picks it up (:attr:`Job.started_at`);
  :meth:`ImagePool.expire` settles jobs that have *run* for longer than the
  timeout. It is called by the poll thread, with the time it read.
* A timed-out job's thread is abandoned (it may never return: OpenCV cannot
  be interrupted) and a replacement is started, so capacity stays. At most
  ``max_stuck`` abandoned threads may be alive at once; one more raises
  :class:`~imgstream.errors.StuckImagesError` (the worker stops with its
  exit code) instead of piling threads up silently.
* Threads are daemons and :meth:`ImagePool.shutdown` joins only healthy
  ones, within a bound: a stuck thread never holds up the exit.

Ownership: ``_running``, ``_stuck``, ``_threads`` and each job's
``started_at``/``timed_out``/``outcome``/``error`` are guarded by ``_lock``
(image threads write them when a job starts and ends, the poll thread when it
expires jobs). A job's result is published by setting its event, after which
it never changes.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from imgstream.clock import Clock
from imgstream.errors import StuckImagesError

log = logging.getLogger(__name__)

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class Pending(Protocol[R_co]):
    """What the emitter waits on for one image: a :class:`Job`, or its share of one."""

    @property
    def timed_out(self) -> bool: ...
    @property
    def outcome(self) -> R_co | None: ...
    @property
    def error(self) -> BaseException | None: ...
    def wait(self, timeout_s: float | None = None) -> bool: ...
    def done(self) -> bool: ...


class Job(Generic[R]):
    """One unit of image work: its function, when it started, and how it ended."""

    def __init__(self, fn: Callable[..., R], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.started_at: float | None = None
        self.timed_out = False
        self.outcome: R | None = None
        self.error: BaseException | None = None
        self._done = threading.Event()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the job finished or timed out; True if it did."""
        return self._done.wait(timeout_s)

    def done(self) -> bool:
        """True once the job finished or timed out."""
        return self._done.is_set()


class ImagePool:
    """A fixed number of image threads; jobs run in submission order."""

    def __init__(
        self,
        threads: int,
        clock: Clock,
        timeout_s: float | None = None,
        max_stuck: int | None = None,
        name: str = "imgstream-image",
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.clock = clock
        self.timeout_s = timeout_s
        self.threads = threads
        self.max_stuck = threads if max_stuck is None else max_stuck
        self._name = name
        self._seq = itertools.count(1)
        self._queue: queue.SimpleQueue[Job[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: dict[Job[Any], threading.Thread] = {}
        self._threads: set[threading.Thread] = set()  # healthy threads (not abandoned)
        self._stuck = 0
        self.abandoned_total = 0
        for _ in range(threads):
            self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._work, name=f"{self._name}-{next(self._seq)}")
        thread.daemon = True  # a thread stuck in an op must never block the exit
        self._threads.add(thread)
        thread.start()

    def submit(self, fn: Callable[..., R], *args: Any) -> Job[R]:
        """Queue ``fn(*args)``; its timeout clock starts when a thread runs it."""
        job: Job[R] = Job(fn, args)
        self._queue.put(job)
        return job

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                job.started_at = self.clock.monotonic()
                self._running[job] = me
            outcome: Any = None
            error: BaseException | None = None
            try:
                outcome = job.fn(*job.args)
            except BaseException as exc:  # handed to whoever waits for the job
                error = exc
            with self._lock:
                self._running.pop(job, None)
                abandoned = job.timed_out
                if abandoned:
                    self._stuck -= 1
                else:
                    job.outcome, job.error = outcome, error
            if abandoned:
                # A replacement took this thread's place when the job timed out.
                log.info("an abandoned image thread returned after its timeout")
                return
            job._done.set()

    def expire(self, now: float | None = None) -> list[Job[Any]]:
        """Settle jobs that have run past the timeout; replace their threads.

        Raises :class:`StuckImagesError` when more than ``max_stuck`` threads
        would be stuck at once.
        """
        if self.timeout_s is None:
            return []
        if now is None:
            now = self.clock.monotonic()
        with self._lock:
            expired = [
                job
                for job in self._running
                if job.started_at is not None and now - job.started_at >= self.timeout_s
            ]
            for job in expired:
                job.timed_out = True
                self._threads.discard(self._running.pop(job))
                self._stuck += 1
                self.abandoned_total += 1
            # Raised once, when this call passes the limit: a shutdown that
            # follows still expires (and settles) jobs without raising again.
            too_many = bool(expired) and self._stuck > self.max_stuck
            if not too_many:
                for _ in expired:
                    self._spawn()
            stuck = self._stuck
        for job in expired:
            job._done.set()
        if too_many:
            raise StuckImagesError(
                f"{stuck} image threads are stuck in an operation for over "
                f"--image-timeout {self.timeout_s:g}s (at most {self.max_stuck} are replaced); "
                "stopping rather than losing capacity"
            )
        return expired

    def restart_clocks(self, now: float | None = None) -> None:
        """Restart the running jobs' clocks (time spent waiting on the output store)."""
        if now is None:
            now = self.clock.monotonic()
        with self._lock:
            for job in self._running:
                job.started_at = now

    @property
    def stuck(self) -> int:
        """Abandoned threads that have not returned yet."""
        with self._lock:
            return self._stuck

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop the healthy threads (within ``timeout_s``); never wait for stuck ones."""
        with self._lock:
            healthy = list(self._threads)
        for _ in healthy:
            self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in healthy:
            thread.join(max(0.0, deadline - time.monotonic()))
