"""The worker loop, written against small protocols so tests can drive it.

One thread polls (the *poll thread*): it feeds the
:class:`~imgstream.worker.batching.MicroBatcher`, blocks at most until the open
batch is due, queues each image on the
:class:`~imgstream.worker.imagepool.ImagePool` as it joins the open batch and hands
each closed batch to the :class:`~imgstream.worker.emitter.Emitter`
(:class:`~imgstream.worker.starts.BatchStarts`), which sends records in consumption
order from its own thread. The poll thread also expires images that ran past
``--image-timeout``, watches the output store
(:class:`~imgstream.io.outage.OutputGate`), commits what is safe through the
:class:`~imgstream.commits.checkpoint.Checkpoint`, and pauses the partitions while too
many batches are in flight or the output store is out (back-pressure), so a
slow batch or an outage never keeps the member from polling. Start counts are
recorded before images start (:class:`~imgstream.commits.isolation.CrashGuard`): an
image that may have killed a worker runs alone, or becomes ``crashed``.

Ownership: every attribute of :class:`Runner` belongs to the poll thread,
except ``_stop`` (an event, set from a signal handler) and ``_fatal`` (set
inside the rebalance callbacks, which run on the poll thread inside
``poll()``, and raised once ``poll()`` returns, so an error there reaches the
CLI as itself rather than wrapped by the Kafka client).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial

from imgstream.clock import Clock
from imgstream.commits.attempts import AttemptBook
from imgstream.commits.checkpoint import TransactionalCheckpoint, checkpoint_for
from imgstream.commits.delivery import Sink
from imgstream.commits.isolation import AttemptStore, CrashGuard
from imgstream.commits.snapshots import StateStore
from imgstream.commits.transactions import Transactor
from imgstream.config import WorkerConfig
from imgstream.errors import ImgstreamError
from imgstream.memory import peak_rss_mb
from imgstream.metrics import Metrics
from imgstream.schema.records import Message, TopicPartition
from imgstream.worker import batching
from imgstream.worker.assignment import NewPartitions
from imgstream.worker.batching import Batch, MicroBatcher
from imgstream.worker.emitter import Emitter
from imgstream.worker.hooks import RunnerHooks
from imgstream.worker.imagepool import ImagePool
from imgstream.worker.lag import Lag
from imgstream.worker.processor import ImageProcessor
from imgstream.worker.source import Source
from imgstream.worker.starts import BatchStarts

log = logging.getLogger(__name__)

#: The longest poll: a stop request (SIGTERM) waits for it to return.
POLL_MAX_S = 0.05
POLL_BUSY_S = 0.02
JOIN_GRACE_S = 60.0
#: How long shutdown waits for in-flight work before leaving it uncommitted.
SHUTDOWN_GRACE_S = 30.0
#: Seconds between checks while waiting for in-flight work (timeouts, outages).
WAIT_STEP_S = 0.05


class Runner:
    """A consumer-group worker: poll, batch, process, deliver, commit.

    The ``source`` calls :meth:`on_revoked` and :meth:`on_assigned` (it is
    given the runner as its rebalance handler by whoever wires them). With a
    ``transactor`` (``--exactly-once``) a TransactionalCheckpoint writes each
    batch's records with its offsets in one transaction (no ``sink_factory``).
    """

    def __init__(
        self,
        config: WorkerConfig,
        processor: ImageProcessor,
        source: Source,
        sink_factory: Callable[[], Sink],
        clock: Clock,
        metrics: Metrics | None = None,
        hooks: RunnerHooks | None = None,
        transactor: Transactor | None = None,
        attempts: AttemptStore | None = None,
        state_store: StateStore | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks if hooks is not None else RunnerHooks()
        self.processor = processor
        self.clock = clock
        self.source = source
        self.metrics = m = metrics if metrics is not None else Metrics()
        self.batcher: MicroBatcher[Message] = MicroBatcher(config.max_batch, config.max_wait_s)

        self._transactor = transactor
        self.delivery, self.checkpoint, self.snapshots = checkpoint_for(
            config, processor, source, sink_factory, clock, m, transactor, state_store
        )
        self.pool = ImagePool(
            config.threads, clock, config.image_timeout_s, config.max_stuck_threads
        )
        self.gate = processor.gate
        self.emitter = Emitter(config, processor, self.delivery, clock, m, self.hooks.observe)
        self.starts = BatchStarts(config.worker_id, self.pool, processor, self.emitter, clock)
        self.guard = CrashGuard(AttemptBook(config.max_attempts), attempts, self.checkpoint.pending)
        self._stop = threading.Event()
        #: Set by the stop: kafka-python's ``close()`` revokes the assignment, and
        #: that revocation must not wait for in-flight work a second time.
        self._closing = False
        self._fatal: ImgstreamError | None = None
        self._paused = False
        self._was_blocked = False
        self._last_activity = clock.monotonic()
        self._started = clock.monotonic()
        self._assigned_once = False
        self.lag = Lag(source, self.checkpoint, m, clock)
        self.new_partitions = NewPartitions(self.lag, self.guard, self.snapshots)
        self.skipped = 0
        #: Start-up phases in seconds, logged once with the first fetch: the
        #: process fills in what came before the runner (``process``, ``topics``),
        #: the runner adds ``join`` (to the first assignment) and ``first-fetch``.
        self.startup: dict[str, float] = {}
        self._startup_logged = False

    @property
    def processed(self) -> int:
        """Messages delivered so far (skipped ones are counted in ``skipped``)."""
        return self.checkpoint.completed - self.skipped

    # -- rebalance handler (called on the poll thread, inside poll) --------

    def on_revoked(self, tps: list[TopicPartition]) -> None:
        """Finish in-flight work and commit what is safe before giving partitions up."""
        if tps:
            self.metrics.rebalances.labels(event="revoked").inc()
        log.info("partitions revoked: %s", _fmt_tps(tps))
        try:
            self.starts.seal(self.batcher.drain(self.clock.monotonic(), batching.REVOKE))
            if not self._closing:  # closing: the stop already waited its grace
                # Well inside max.poll.interval.ms: the group must not wait on us.
                self._finish_inflight(self.config.poll_interval_s / 2)
            self.checkpoint.commit(force=True)
        except ImgstreamError as exc:
            # The Kafka client would wrap it in a KafkaError; keep it for after poll().
            self._fatal = exc
        self.checkpoint.forget(tps)
        self.guard.forget(tps)
        self.new_partitions.forget(tps)
        if self.processor.states is not None:
            self.processor.states.forget(tps)
        self.lag.revoked(tps)
        self._paused = False

    def on_assigned(self, tps: list[TopicPartition]) -> None:
        """Log and count the new assignment."""
        self.metrics.rebalances.labels(event="assigned").inc()
        log.info("partitions assigned: %s", _fmt_tps(tps))
        # Read on the poll thread once poll() returns: the client is busy in here.
        self.lag.assigned(tps)
        if tps:
            if not self._assigned_once:
                self.startup["join"] = self.clock.monotonic() - self._started
            self._assigned_once = True
            self._last_activity = self.clock.monotonic()

    # -- the loop ------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop taking work and shut down cleanly (signal-safe)."""
        self._stop.set()

    def run(self) -> None:
        """Run until :meth:`stop` or idle exit; then finish, commit and leave."""
        try:
            while not self._stop.is_set():
                self._step()
                if self.hooks.done is not None and self.hooks.done(self):
                    log.info("the range is done: exiting")
                    break
                if self._idle_expired():
                    log.info("idle for %.1fs, nothing in flight: exiting", self.config.idle_exit_s)
                    break
        finally:
            self._shutdown()

    def _step(self) -> None:
        now = self.clock.monotonic()
        due_in = self.batcher.seconds_until_due(now)
        timeout = POLL_MAX_S if due_in is None else min(POLL_MAX_S, due_in)
        if self.emitter.pending():
            # Acknowledgements arrive while batches run: apply and commit them
            # promptly, so a crash redoes as little as possible.
            timeout = min(timeout, POLL_BUSY_S)
        messages = self.source.poll(timeout)
        if self._fatal is not None:
            raise self._fatal
        messages, loaded = self.new_partitions.load(messages)
        if loaded:  # the reads may have blocked: that was not idle time
            self._last_activity = self.clock.monotonic()
        now = self.clock.monotonic()
        self._adapt()  # the fetch just updated the high-watermarks
        skip = self.hooks.skip
        fetched = []
        for msg in messages:
            self.checkpoint.register(msg)
            if skip is not None and skip(msg):
                self.checkpoint.complete(msg.tp, msg.offset)  # outside the range: nothing to do
                self.skipped += 1
                continue
            fetched.append(msg)
        self._run(self.guard.admit(fetched), now)
        self._run_held(now)
        if messages:
            self._last_activity = now
            if not self._startup_logged:
                self._log_startup(now)
        self.starts.seal(self.batcher.poll(now))
        self._watch(now)
        self.checkpoint.commit()
        self._maybe_rewind()
        self._backpressure()
        self.lag.update(now)

    def _run(self, messages: list[Message], now: float) -> None:
        """Batch and start messages (their start counts recorded first)."""
        self.guard.started(messages)
        for msg in messages:
            for batch in self.batcher.add(msg, now):
                self.starts.seal(batch)
        self.starts.start(self.batcher.items)  # images start as they join their batch

    def _run_held(self, now: float) -> None:
        """Messages held behind a suspect: run each suspect alone once nothing else runs."""
        self._run(self.guard.release(), now)
        if not (self.guard.holding or self.guard.alone):
            return
        if not self._idle():
            self.guard.waiting(now, self.checkpoint.in_flight(), self.emitter.pending())
            return
        self.checkpoint.commit(force=True)  # a suspect that finished is committed first
        nxt = self.guard.next_alone()
        if nxt is None:
            self._run(self.guard.release(), now)
            return
        msg, verdict = nxt
        crashed = partial(self.processor.crashed, attempts=verdict.attempts)
        run = None if verdict.action == "isolate" else crashed
        self.starts.seal(Batch([msg], batching.ISOLATE, now, now, 1), run)

    def _idle(self) -> bool:
        """Nothing batched, running or unacknowledged but the held messages."""
        return (
            not len(self.batcher)
            and not self.emitter.pending()
            and self.checkpoint.in_flight() == self.guard.holding
        )

    def _log_startup(self, now: float) -> None:
        """One line with the start-up phases, at the first fetch that brought messages."""
        self._startup_logged = True
        phases = dict(self.startup)
        phases["first-fetch"] = now - self._started - phases.get("join", 0.0)
        log.info("start-up: %s", ", ".join(f"{k} {v:.3f}s" for k, v in phases.items()))

    def _watch(self, now: float) -> None:
        """Image timeouts and output outages: the checks that need the current time."""
        blocked = self.gate.blocked
        if blocked:
            self.gate.check(now)  # raises past --max-outage
        elif self._was_blocked:
            self.pool.restart_clocks(now)  # waiting on the store is not running time
        else:
            self.pool.expire(now)
        self._was_blocked = blocked
        self.metrics.sink_blocked.set(int(blocked))
        self.metrics.stuck_threads.set(self.pool.stuck)

    def _adapt(self) -> None:
        """Adaptive batching: choose the batch size from the backlog and per-image cost.

        With little backlog, small batches keep latency low (a batch of n takes
        about n x cost); once the backlog cannot be cleared within the target
        anyway, full batches maximise throughput.
        """
        target = self.config.target_latency_s
        if target is None:
            return
        # The backlog is read right after a fetch: the high-watermark is local.
        backlog = sum(lag for _tp, lag in self.lag.lags())
        cost = self.emitter.cost_per_image
        size = batching.adaptive_size(backlog, cost, target, self.config.max_batch)
        self.batcher.max_batch = size
        self.batcher.max_wait_s = min(self.config.max_wait_s, target / 4)
        self.metrics.batch_target.set(size)

    def _idle_expired(self) -> bool:
        idle = self.config.idle_exit_s
        if idle is None:
            return False
        busy = (
            len(self.batcher)
            or self.checkpoint.in_flight()
            or self.emitter.pending()
            or self.guard.holding
            or self.new_partitions.waiting
        )
        # A member still joining the group has not had a chance to receive
        # anything: idle time counts from its first assignment.
        joining = not self._assigned_once and self.clock.monotonic() - self._started < JOIN_GRACE_S
        if busy or joining:
            self._last_activity = self.clock.monotonic()
            return False
        return self.clock.monotonic() - self._last_activity >= idle

    def _backpressure(self) -> None:
        full = (
            self.emitter.pending() >= self.config.max_inflight_batches
            or self.gate.blocked
            or self.guard.holding > 0  # suspects run alone: fetch nothing more meanwhile
        )
        if full and not self._paused:
            self.source.pause(self.source.assignment())
            self._paused = True
            self.metrics.paused.set(1)
        elif not full and self._paused:
            self.source.resume(self.source.assignment())
            self._paused = False
            self.metrics.paused.set(0)

    # -- batches -------------------------------------------------------------

    def _finish_inflight(self, timeout_s: float | None = None) -> bool:
        """Wait (bounded) for every submitted batch, then every acknowledgement.

        Keeps expiring timed-out images and watching the output store while it
        waits; True when everything in flight was settled.
        """
        deadline = None if timeout_s is None else self.clock.monotonic() + timeout_s
        while not self.emitter.wait_idle(WAIT_STEP_S):
            now = self.clock.monotonic()
            self._watch(now)
            if deadline is not None and now >= deadline:
                return False
        if self.emitter.pending():  # raises what the emitter failed with
            return False
        left = None if deadline is None else max(0.0, deadline - self.clock.monotonic())
        settled = self.delivery.wait_idle(left)
        self.checkpoint.commit(force=True)
        return settled

    def _maybe_rewind(self) -> None:
        """After an aborted transaction: drop the open batch, go back to the committed offsets."""
        checkpoint = self.checkpoint
        if not isinstance(checkpoint, TransactionalCheckpoint) or not checkpoint.rewind_needed:
            return
        self.batcher.drain(self.clock.monotonic(), batching.REVOKE)  # dropped: read again
        self.starts.drop()
        self.guard.drop_held()
        grace_s = self.config.poll_interval_s / 2  # like a revocation
        tps = checkpoint.rewind(self.source, self.emitter, self._watch, grace_s, WAIT_STEP_S)
        if self.processor.states is not None:  # back to the states of the committed offsets
            self.processor.states.forget(tps)
            if self.snapshots is not None:
                self.snapshots.restore(tps, self.source.committed(tps))
        log.info("rewound %s to the committed offsets", _fmt_tps(tps))
        self._last_activity = self.clock.monotonic()  # to read again, after a long block maybe

    # -- shutdown ------------------------------------------------------------

    def _shutdown(self) -> None:
        log.info("stopping: finishing in-flight work")
        self._closing = True
        try:
            if self.gate.blocked:
                self.gate.close()  # unwritten images stay uncommitted; do not wait for the store
            self.starts.seal(self.batcher.drain(self.clock.monotonic(), batching.SHUTDOWN))
            if not self._finish_inflight(SHUTDOWN_GRACE_S):
                log.warning("leaving in-flight work uncommitted: it will be redone")
        finally:
            self.gate.close()
            self.emitter.close()
            self.pool.shutdown(1.0)
            try:
                self.source.close()
            finally:
                self.delivery.close(5.0)
                if self._transactor is not None:
                    self._transactor.close(5.0)
                if self.guard.store is not None:
                    self.guard.store.close(5.0)
                if self.snapshots is not None:
                    self.snapshots.store.close(5.0)
        log.info("stopped after %d messages; peak memory %.0f MB", self.processed, peak_rss_mb())


def _fmt_tps(tps: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "(none)"
