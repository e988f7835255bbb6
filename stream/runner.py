"""The worker loop, written against small protocols so tests can drive it.

One thread polls: it feeds the :class:`~imgstream.batching.MicroBatcher`,
blocks at most until the open batch is due, hands closed batches to a batch
thread, applies delivery acknowledgements to the
:class:`~imgstream.offsets.OffsetTracker`, and commits what is safe. Batches
run off the poll thread (images in parallel on a thread pool), so a slow
batch never keeps the member from polling; when too many batches are in
flight the partitions are paused (back-pressure) and resumed when they drain.

Delivery: a message counts as complete when its output is stored and its
result or failure record is acknowledged by the broker. A record that cannot
be delivered is re-sent on a new producer; after ``MAX_SEND_ATTEMPTS`` the
worker stops with :class:`~imgstream.errors.DeliveryError` and never commits
past it.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from typing import Protocol

from imgstream import batching
from imgstream.batching import Batch, MicroBatcher
from imgstream.clock import Clock
from imgstream.codec import decode_ref, encode
from imgstream.config import WorkerConfig
from imgstream.delivery import MAX_SEND_ATTEMPTS, Delivery, Sink
from imgstream.errors import TIMEOUT, ImageError
from imgstream.metrics import Metrics
from imgstream.offsets import OffsetTracker
from imgstream.processor import ImageProcessor, Outcome
from imgstream.records import BatchSummary, Failure, ImageRef, Message, Result, TopicPartition

log = logging.getLogger(__name__)

POLL_MAX_S = 0.2
POLL_BUSY_S = 0.02
COMMIT_EVERY_S = 0.02
LAG_EVERY_S = 1.0
JOIN_GRACE_S = 60.0


class Source(Protocol):
    """Where messages come from (a consumer-group member)."""

    def poll(self, timeout_s: float) -> list[Message]: ...
    def commit(self, offsets: dict[TopicPartition, int]) -> None: ...
    def assignment(self) -> list[TopicPartition]: ...
    def pause(self, tps: list[TopicPartition]) -> None: ...
    def resume(self, tps: list[TopicPartition]) -> None: ...
    def highwater(self, tp: TopicPartition) -> int | None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class RunnerHooks:
    """Optional behaviour for bounded runs (replay) and observers.

    ``skip(msg)`` marks a message done without processing it (outside a
    replayed range); ``done(runner)`` ends the run once it returns True;
    ``observe(outcome)`` sees every outcome (called from a batch thread).
    """

    skip: Callable[[Message], bool] | None = None
    done: Callable[[Runner], bool] | None = None
    observe: Callable[[Outcome], None] | None = None


class Runner:
    """A consumer-group worker: poll, batch, process, deliver, commit."""

    def __init__(
        self,
        config: WorkerConfig,
        processor: ImageProcessor,
        source_factory: Callable[[Runner], Source],
        sink_factory: Callable[[], Sink],
        clock: Clock,
        metrics: Metrics | None = None,
        hooks: RunnerHooks | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks if hooks is not None else RunnerHooks()
        self.processor = processor
        self.clock = clock
        self.metrics = metrics if metrics is not None else Metrics()
        self.batcher: MicroBatcher[Message] = MicroBatcher(config.max_batch, config.max_wait_s)
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.delivery = Delivery(sink_factory, self.metrics.producer_restarts.inc)
        self._images = ThreadPoolExecutor(config.threads, thread_name_prefix="imgstream-image")
        self._batches = ThreadPoolExecutor(
            config.max_inflight_batches, thread_name_prefix="imgstream-batch"
        )
        self._inflight: set[Future[None]] = set()
        self._stop = threading.Event()
        self._paused = False
        self._batch_seq = itertools.count(1)
        self._arrivals: dict[TopicPartition, collections.deque[tuple[int, int]]] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = float("-inf")
        self._last_lag = float("-inf")
        self._last_activity = clock.monotonic()
        self._started = clock.monotonic()
        self._assigned_once = False
        self.processed = 0
        self.skipped = 0
        self._cost_per_image = 0.0
        self.source = source_factory(self)

    # -- rebalance handler (called on the poll thread, inside poll) --------

    def on_revoked(self, tps: list[TopicPartition]) -> None:
        """Finish in-flight work and commit what is safe before giving partitions up."""
        if tps:
            self.metrics.rebalances.labels(event="revoked").inc()
        log.info("partitions revoked: %s", _fmt_tps(tps))
        self._submit(self.batcher.drain(self.clock.monotonic(), batching.REVOKE))
        self._finish_inflight()
        self._commit(force=True)
        self.tracker.forget(tps)
        for tp in tps:
            self._arrivals.pop(tp, None)
            self._committed.pop(tp, None)
            for gauge in (self.metrics.lag, self.metrics.lag_seconds):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))
        self._paused = False

    def on_assigned(self, tps: list[TopicPartition]) -> None:
        """Log and count the new assignment."""
        self.metrics.rebalances.labels(event="assigned").inc()
        log.info("partitions assigned: %s", _fmt_tps(tps))
        if tps:
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
                    log.info(
                        "idle for %.1fs with nothing in flight: exiting", self.config.idle_exit_s
                    )
                    break
        finally:
            self._shutdown()

    def _step(self) -> None:
        now = self.clock.monotonic()
        due_in = self.batcher.seconds_until_due(now)
        timeout = POLL_MAX_S if due_in is None else min(POLL_MAX_S, due_in)
        if self._inflight:
            # Acknowledgements arrive while batches run: apply and commit them
            # promptly, so a crash redoes as little as possible.
            timeout = min(timeout, POLL_BUSY_S)
        messages = self.source.poll(timeout)
        now = self.clock.monotonic()
        self._adapt()  # the fetch just updated the high-watermarks
        skip = self.hooks.skip
        for msg in messages:
            self.tracker.register(msg.tp, msg.offset)
            self._arrivals.setdefault(msg.tp, collections.deque()).append(
                (msg.offset, msg.timestamp_ms)
            )
            if skip is not None and skip(msg):
                self.tracker.complete(msg.tp, msg.offset)  # outside the range: nothing to do
                self.skipped += 1
                continue
            for batch in self.batcher.add(msg, now):
                self._submit(batch)
        if messages:
            self._last_activity = now
        self._submit(self.batcher.poll(now))
        self._apply_acks()
        self._commit()
        self._backpressure()
        self._update_lag(now)

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
        backlog = sum(lag for _tp, lag in self._lags())
        size = batching.adaptive_size(backlog, self._cost_per_image, target, self.config.max_batch)
        self.batcher.max_batch = size
        self.batcher.max_wait_s = min(self.config.max_wait_s, target / 4)
        self.metrics.batch_target.set(size)

    def _idle_expired(self) -> bool:
        idle = self.config.idle_exit_s
        if idle is None:
            return False
        busy = len(self.batcher) or self.tracker.in_flight() or self._live_batches()
        # A member still joining the group has not had a chance to receive
        # anything: idle time counts from its first assignment.
        joining = not self._assigned_once and self.clock.monotonic() - self._started < JOIN_GRACE_S
        if busy or joining:
            self._last_activity = self.clock.monotonic()
            return False
        return self.clock.monotonic() - self._last_activity >= idle

    def _live_batches(self) -> int:
        for future in [f for f in self._inflight if f.done()]:
            self._inflight.discard(future)
            exc = future.exception()
            if exc is not None:  # a bug, not a bad image: stop rather than lose work
                raise exc
        return len(self._inflight)

    def _backpressure(self) -> None:
        full = self._live_batches() >= self.config.max_inflight_batches
        if full and not self._paused:
            self.source.pause(self.source.assignment())
            self._paused = True
            self.metrics.paused.set(1)
        elif not full and self._paused:
            self.source.resume(self.source.assignment())
            self._paused = False
            self.metrics.paused.set(0)

    # -- batches -------------------------------------------------------------

    def _submit(self, batch: Batch[Message] | None) -> None:
        if batch is None or not batch.items:
            return
        batch_id = f"{self.config.worker_id}-{next(self._batch_seq)}"
        future = self._batches.submit(self._process_batch, batch, batch_id)
        self._inflight.add(future)

    def _process_batch(self, batch: Batch[Message], batch_id: str) -> None:
        """Runs on a batch thread: images in parallel, records sent in message order."""
        started = self.clock.monotonic()
        wait_s = max(0.0, started - batch.opened_at)
        start_ms = self.clock.wall_ms()
        futures = [
            self._images.submit(self.processor.process, msg, batch_id, wait_s, start_ms)
            for msg in batch.items
        ]
        ok = failed = pixels = 0
        limit = self.config.image_timeout_s
        # Records go out in message order, so one source's results stay in order.
        for msg, future in zip(batch.items, futures, strict=True):
            try:
                outcome = future.result(timeout=limit)
            except FuturesTimeout:
                # The thread cannot be stopped; its late outcome is dropped, and the
                # message is settled now so its partition moves on.
                self.metrics.timeouts.inc()
                future.cancel()
                error = ImageError(TIMEOUT, f"still running after --image-timeout {limit:g}s")
                outcome = Outcome(msg, self.processor.failure(msg, error, batch_id, _ref(msg)))
            self._deliver(outcome)
            pixels += outcome.pixels
            if outcome.ok:
                ok += 1
            else:
                failed += 1
        elapsed = self.clock.monotonic() - started
        # Seconds a batch adds per image, smoothed (read by the poll thread).
        per_image = elapsed / len(batch.items)
        previous = self._cost_per_image
        self._cost_per_image = per_image if previous == 0 else 0.7 * previous + 0.3 * per_image
        summary = BatchSummary(
            batch_id=batch_id,
            worker=self.config.worker_id,
            size=len(batch.items),
            ok=ok,
            failed=failed,
            pixels=pixels,
            reason=batch.reason,
            wait_s=round(wait_s, 6),
            process_s=round(elapsed, 6),
            partitions=tuple(sorted({m.partition for m in batch.items})),
            ts=self.clock.wall_ms(),
        )
        self.delivery.send(self.config.results_topic, None, encode(summary), None)
        m = self.metrics
        m.batches.labels(reason=batch.reason).inc()
        m.batch_size.observe(len(batch.items))
        m.batch_pixels.observe(pixels)
        m.batch_seconds.observe(elapsed)

    def _deliver(self, outcome: Outcome) -> None:
        record = outcome.record
        msg = outcome.message
        m = self.metrics
        if self.hooks.observe is not None:
            self.hooks.observe(outcome)
        if isinstance(record, Result):
            topic = self.config.results_topic
            m.images.labels(status="ok").inc()
            m.observe_stages(record.timings)
            m.latency.observe(record.latency_ms / 1000.0)
            m.bytes_in.inc(outcome.bytes_in)
            m.bytes_out.inc(outcome.bytes_out)
        else:
            assert isinstance(record, Failure)
            topic = self.config.dlq_topic
            m.images.labels(status="failed").inc()
            m.failures.labels(type=record.error_type).inc()
            if record.error_type == "stale":
                m.stale.inc()
            log.warning(
                "failure %s at %s[%d]@%d: %s",
                record.error_type,
                msg.topic,
                msg.partition,
                msg.offset,
                record.error_message,
            )
        self.delivery.send(topic, msg.key, encode(record), (msg.tp, msg.offset))

    def _apply_acks(self) -> None:
        self.delivery.drain(self._complete)

    def _complete(self, tp: TopicPartition, offset: int) -> None:
        self.tracker.complete(tp, offset)
        self.processed += 1

    def _finish_inflight(self, timeout_s: float | None = None) -> None:
        """Wait for every submitted batch, then for every record's acknowledgement."""
        for future in list(self._inflight):
            future.exception(timeout=timeout_s)
        self._inflight.clear()
        for _ in range(MAX_SEND_ATTEMPTS):
            self.delivery.flush(timeout_s)
            self._apply_acks()
            if not self.tracker.in_flight():
                return

    # -- offsets and lag -----------------------------------------------------

    def committed(self, tp: TopicPartition) -> int | None:
        """The last offset committed for a partition (next to read), if any."""
        return self._committed.get(tp)

    def _commit(self, force: bool = False) -> None:
        now = self.clock.monotonic()
        if not force and now - self._last_commit < COMMIT_EVERY_S:
            return
        due = self.tracker.commits_due()
        if not due:
            return
        self._last_commit = now
        try:
            self.source.commit(due)
        except Exception as exc:  # e.g. a rebalance in progress: the work is redone
            self.metrics.commits.labels(outcome="failed").inc()
            log.warning("offset commit failed: %s", exc)
            return
        self.metrics.commits.labels(outcome="ok").inc()
        self.tracker.mark_committed(due)
        self._committed.update(due)
        for tp, point in due.items():
            arrivals = self._arrivals.get(tp)
            while arrivals and arrivals[0][0] < point:
                arrivals.popleft()

    def _lags(self) -> list[tuple[TopicPartition, int]]:
        """Messages between the committed offset and the last fetch's high-watermark."""
        out = []
        for tp in self.source.assignment():
            hw = self.source.highwater(tp)
            if hw is not None:
                out.append((tp, max(0, hw - (self._committed.get(tp) or 0))))
        return out

    def _update_lag(self, now: float) -> None:
        if now - self._last_lag < LAG_EVERY_S:
            return
        self._last_lag = now
        wall = self.clock.wall_ms()
        for tp, lag in self._lags():
            arrivals = self._arrivals.get(tp)
            age = (wall - arrivals[0][1]) / 1000.0 if arrivals else 0.0
            labels = (tp.topic, str(tp.partition))
            self.metrics.lag.labels(*labels).set(lag)
            self.metrics.lag_seconds.labels(*labels).set(max(0.0, age))
        self.metrics.in_flight.set(self.tracker.in_flight())

    # -- shutdown ------------------------------------------------------------

    def _shutdown(self) -> None:
        log.info("stopping: finishing in-flight work")
        try:
            self._submit(self.batcher.drain(self.clock.monotonic(), batching.SHUTDOWN))
            self._finish_inflight()
            self._commit(force=True)
        finally:
            self._images.shutdown(wait=True)
            self._batches.shutdown(wait=True)
            try:
                self.source.close()
            finally:
                self.delivery.close(5.0)
        log.info("stopped after %d messages; peak memory %.0f MB", self.processed, peak_rss_mb())


def _ref(msg: Message) -> ImageRef | None:
    try:
        return decode_ref(msg.value, msg.timestamp_ms)
    except ImageError:
        return None


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    ``VmHWM`` where Linux has it: ``ru_maxrss`` survives ``exec``, so a worker
    started by a big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _fmt_tps(tps: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "(none)"
