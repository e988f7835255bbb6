"""Emitter: one thread that sends every batch's records in consumption order.

The poll thread submits a batch's images to the
:class:`~imgstream.worker.imagepool.ImagePool` as soon as the batch closes, so the
image work of consecutive batches overlaps; then it hands the batch here. The
emitter thread takes batches in the order they closed and, within a batch,
waits for each image in message order before sending its record. So records
leave in consumption order, which is offset order per partition: one source's
results stay in capture order across batches, however many are in flight.
The price is head-of-line waiting: a slow image holds back the records of
later batches (not their image work), bounded by ``--image-timeout``.

Ownership: ``_queue`` is the hand-off (poll thread puts, emitter gets);
``_pending`` (batches submitted, not yet sent) and ``_error`` are guarded by
``_lock``; ``cost_per_image`` is written by the emitter thread only and read
by the poll thread (a float: a stale read is harmless).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from imgstream.clock import Clock
from imgstream.commits.delivery import Delivery
from imgstream.commits.transactions import Staging
from imgstream.config import WorkerConfig
from imgstream.errors import TIMEOUT, ImageError, OutputUnavailable
from imgstream.metrics import Metrics
from imgstream.schema.codec import encode
from imgstream.schema.decoding import decode_ref
from imgstream.schema.records import BatchSummary, Failure, ImageRef, Message, Result
from imgstream.worker.batching import Batch
from imgstream.worker.imagepool import Pending
from imgstream.worker.outcome import Outcome
from imgstream.worker.processor import ImageProcessor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    """A closed batch whose images are queued on the pool."""

    batch: Batch[Message]
    batch_id: str
    jobs: Sequence[Pending[Outcome]]
    wait_s: float  # how long the batch stayed open, collecting refs
    started: float  # monotonic: when its first image was queued


class Emitter:
    """Sends the records of submitted batches, in order, from its own thread."""

    def __init__(
        self,
        config: WorkerConfig,
        processor: ImageProcessor,
        delivery: Delivery | Staging,
        clock: Clock,
        metrics: Metrics,
        observe: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.config = config
        self.processor = processor
        self.delivery = delivery
        self.clock = clock
        self.metrics = metrics
        self.observe = observe
        self.cost_per_image = 0.0
        self._queue: queue.SimpleQueue[Submitted | None] = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._pending = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="imgstream-emitter")
        self._thread.daemon = True  # it may wait on a stuck image; never hold up the exit
        self._thread.start()

    def submit(self, item: Submitted) -> None:
        """Queue a batch for sending (poll thread)."""
        with self._lock:
            self._pending += 1
        self._queue.put(item)

    def pending(self) -> int:
        """Batches submitted and not yet sent; raises if the emitter thread failed."""
        with self._lock:
            if self._error is not None:
                raise self._error
            return self._pending

    def wait_idle(self, timeout_s: float | None) -> bool:
        """Wait until every submitted batch is sent (or the emitter failed)."""
        with self._lock:
            return self._lock.wait_for(
                lambda: self._pending == 0 or self._error is not None, timeout_s
            )

    def close(self) -> None:
        """Let the thread end once the queue is empty."""
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._emit(item)
            except BaseException as exc:  # a bug, not a bad image: the poll thread stops
                log.exception("the emitter failed")
                with self._lock:
                    self._error = exc
                    self._lock.notify_all()
                return
            with self._lock:
                self._pending -= 1
                self._lock.notify_all()

    def _emit(self, item: Submitted) -> None:
        batch, batch_id = item.batch, item.batch_id
        ok = failed = pixels = 0
        limit = self.config.image_timeout_s
        for msg, job in zip(batch.items, item.jobs, strict=True):
            if not job.done() and self._queue.empty():
                # About to wait, with no other batch behind this one: a live
                # stream. What was sent should leave now, not after the linger
                # (busy streams have batches queued and share requests).
                self.delivery.push()
            job.wait()
            if job.timed_out:
                self.metrics.timeouts.inc()
                error = ImageError(TIMEOUT, f"ran for over --image-timeout {limit:g}s")
                failure = self.processor.failure(msg, error, batch_id, _ref(msg))
                outcome = Outcome(msg, failure)
            elif isinstance(job.error, OutputUnavailable):
                continue  # stopped while the store was out: not delivered, not committed
            elif job.error is not None:
                raise job.error
            else:
                assert job.outcome is not None
                outcome = job.outcome
            self._deliver(outcome)
            pixels += outcome.pixels
            ok, failed = (ok + 1, failed) if outcome.ok else (ok, failed + 1)
        elapsed = self.clock.monotonic() - item.started
        # Seconds a batch adds per image, smoothed (read by the poll thread).
        per_image = elapsed / len(batch.items)
        previous = self.cost_per_image
        self.cost_per_image = per_image if previous == 0 else 0.7 * previous + 0.3 * per_image
        summary = BatchSummary(
            batch_id=batch_id,
            worker=self.config.worker_id,
            size=len(batch.items),
            ok=ok,
            failed=failed,
            pixels=pixels,
            reason=batch.reason,
            wait_s=round(item.wait_s, 6),
            process_s=round(elapsed, 6),
            partitions=tuple(sorted({m.partition for m in batch.items})),
            ts=self.clock.wall_ms(),
        )
        self.delivery.send(self.config.results_topic, None, encode(summary), None)
        self.delivery.seal()
        if self._queue.empty():  # idle until the next batch: nothing to wait for
            self.delivery.push()
        m = self.metrics
        m.batches.labels(reason=batch.reason).inc()
        m.batch_size.observe(len(batch.items))
        m.batch_pixels.observe(pixels)
        m.batch_seconds.observe(elapsed)

    def _deliver(self, outcome: Outcome) -> None:
        record = outcome.record
        msg = outcome.message
        m = self.metrics
        if self.observe is not None:
            self.observe(outcome)
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


def _ref(msg: Message) -> ImageRef | None:
    try:
        return decode_ref(msg.value, msg.timestamp_ms)
    except ImageError:
        return None
