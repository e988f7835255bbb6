"""Delivery of records: send through a replaceable sink, collect acknowledgements.

Records are sent from the emitter thread; the broker's acknowledgements
arrive on the producer's I/O thread. Successful ones are queued for the poll
thread, which applies them in :meth:`Delivery.drain` (cheap, never blocks).
Failed ones go to this object's own resend thread, which recreates the sink
(an idempotent producer can stay broken after a broker restart) and sends
again: a send may block for the producer's ``max_block_ms``, and on the poll
thread that could cost the member its place in the group. After
``MAX_SEND_ATTEMPTS`` a record is given up: :meth:`drain` raises
:class:`~imgstream.errors.DeliveryError` on the poll thread, and the
record's offset is never committed. A sink that cannot be recreated (the
broker still out of reach: the factory waits ``--connect-timeout`` for it) is
tried again, ``restart_backoff_s`` apart, the record kept, for
``RESTART_PATIENCE_S``: a whole-cluster outage of that long (a restart of a
one-node Kafka, a network cut) is ridden out; a longer one gives the delivery
up, and the worker exits with nothing committed past its delivered records.
A replaced sink is always closed, in bounded time: a close that waits
``RETIRE_TIMEOUT_S`` for its records, and if that raises (kafka-python's
close raises when it cannot flush, before it stops its I/O thread) a close
that does not wait; otherwise each restart would leak a producer and its
thread.

Ownership: ``_sink`` is swapped by the resend thread under ``_lock``;
``_outstanding`` (records tied to an offset, not yet acknowledged) and
``_fatal`` are guarded by ``_idle`` (a condition on the same lock).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from imgstream.errors import DeliveryError
from imgstream.schema.records import TopicPartition

log = logging.getLogger(__name__)

MAX_SEND_ATTEMPTS = 4

#: How long failed re-creations of the sink go on before the delivery is given up: as
#: long as a record's own sends may take by default (4 x delivery.timeout.ms of 30 s).
RESTART_PATIENCE_S = 120.0

#: How long a replaced sink may take to flush before it is closed without waiting.
RETIRE_TIMEOUT_S = 0.5

Ack = Callable[[BaseException | None], None]


class Sink(Protocol):
    """Where records go; ``ack`` is called once per record, from any thread."""

    def send(self, topic: str, key: bytes | None, value: bytes, ack: Ack) -> None: ...
    def push(self) -> None: ...
    def flush(self, timeout_s: float | None = None) -> None: ...
    def close(self, timeout_s: float = 5.0) -> None:
        """Flush for up to ``timeout_s``, then stop; ``0``: stop now, dropping what is unsent."""
        ...


@dataclass(frozen=True)
class _Record:
    tp: TopicPartition
    offset: int
    topic: str
    key: bytes | None
    value: bytes
    attempt: int
    generation: int
    error: BaseException | None = None


class Delivery:
    """Sends records and turns acknowledgements into completed offsets."""

    def __init__(
        self,
        sink_factory: Callable[[], Sink],
        on_restart: Callable[[], None],
        monotonic: Callable[[], float],
        restart_backoff_s: float = 1.0,
    ) -> None:
        self._sink_factory = sink_factory
        self._on_restart = on_restart
        self._monotonic = monotonic
        self._restart_backoff_s = restart_backoff_s
        self._closing = threading.Event()
        #: Failed sink creations in a row, and when the first of them failed; the
        #: resend thread's own.
        self._failed_restarts = 0
        self._failing_since = 0.0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._sink = sink_factory()
        self._generation = 0
        self._outstanding = 0
        self._fatal: DeliveryError | None = None
        self._acks: queue.SimpleQueue[tuple[TopicPartition, int]] = queue.SimpleQueue()
        self._retries: queue.SimpleQueue[_Record | None] = queue.SimpleQueue()
        self._resender = threading.Thread(target=self._resend_loop, name="imgstream-resend")
        self._resender.daemon = True
        self._resender.start()

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        origin: tuple[TopicPartition, int] | None,
    ) -> None:
        """Send a record; with an ``origin`` message, its acknowledgement completes it."""
        if origin is None:
            with self._lock:
                sink = self._sink

            def untied(error: BaseException | None) -> None:
                if error is not None:
                    log.warning("record not delivered (not tied to an offset): %s", error)

            sink.send(topic, key, value, untied)
            return
        with self._lock:
            self._outstanding += 1
        self._send(_Record(origin[0], origin[1], topic, key, value, 1, 0))

    def _send(self, record: _Record) -> None:
        with self._lock:
            sink, generation = self._sink, self._generation
        sent = _Record(
            record.tp,
            record.offset,
            record.topic,
            record.key,
            record.value,
            record.attempt,
            generation,
        )

        def ack(error: BaseException | None) -> None:
            if error is None:
                self._acks.put((sent.tp, sent.offset))
                self._settle()
            else:
                self._retries.put(
                    _Record(
                        sent.tp,
                        sent.offset,
                        sent.topic,
                        sent.key,
                        sent.value,
                        sent.attempt,
                        sent.generation,
                        error,
                    )
                )

        sink.send(record.topic, record.key, record.value, ack)

    def _settle(self, fatal: DeliveryError | None = None) -> None:
        with self._idle:
            self._outstanding -= 1
            if fatal is not None and self._fatal is None:
                self._fatal = fatal
            self._idle.notify_all()

    def _resend_loop(self) -> None:
        """The resend thread: recreate the sink once per failing generation, send again."""
        while True:
            record = self._retries.get()
            if record is None:
                return
            with self._lock:
                given_up = self._fatal is not None
            if given_up:  # the worker stops on an earlier record: no more restarts
                self._settle()
                continue
            if record.attempt >= MAX_SEND_ATTEMPTS:
                self._settle(
                    DeliveryError(
                        f"could not deliver the record of {record.tp.topic}[{record.tp.partition}]@"
                        f"{record.offset} after {record.attempt} attempts: {record.error}"
                    )
                )
                continue
            try:
                restarted = self._restart(record.generation)
            except Exception as exc:  # no producer could be made: the broker may still be away
                now = self._monotonic()
                if self._failed_restarts == 0:
                    self._failing_since = now
                self._failed_restarts += 1
                failing_s = now - self._failing_since
                if failing_s >= RESTART_PATIENCE_S:
                    self._settle(
                        DeliveryError(
                            f"could not recreate the producer for {failing_s:.0f}s "
                            f"({self._failed_restarts} tries): {exc}"
                        )
                    )
                    continue
                # once per outage, not per try: the broker links say when it is back
                (log.debug if self._failed_restarts > 1 else log.warning)(
                    "could not recreate the producer (%s); trying again every %gs for up to %gs",
                    exc,
                    self._restart_backoff_s,
                    RESTART_PATIENCE_S,
                )
                self._retries.put(record)  # the same attempt: it was not sent again
                self._closing.wait(self._restart_backoff_s)
                continue
            if self._failed_restarts:
                log.warning("recreated the producer after %d failed tries", self._failed_restarts)
            self._failed_restarts = 0
            try:
                if restarted:
                    # once per producer, not per record: an outage fails them by the hundred
                    log.warning(
                        "records not delivered (%s); recreating the producer to send them again",
                        record.error,
                    )
                self._send(
                    _Record(
                        record.tp,
                        record.offset,
                        record.topic,
                        record.key,
                        record.value,
                        record.attempt + 1,
                        record.generation,
                    )
                )
            except Exception as exc:  # a send that raises instead of failing its future
                self._settle(DeliveryError(f"could not send the record again: {exc}"))

    def _restart(self, failed_generation: int) -> bool:
        """Replace the sink of ``failed_generation``; False if that was done already."""
        with self._lock:
            if failed_generation != self._generation:
                return False  # this sink was already replaced after an earlier failure
        new = self._sink_factory()
        with self._lock:
            old, self._sink = self._sink, new
            self._generation += 1
        try:
            self._on_restart()
        except Exception as exc:  # a counter that failed must not stop the re-send
            log.warning("the producer-restart callback failed: %s", exc)
        finally:
            _retire(old)
        return True

    def seal(self) -> None:
        """End of a batch: records already left one by one (see Staging for the other way)."""

    def push(self) -> None:
        """Nothing more is coming for now: send what lingers in the producer at once."""
        with self._lock:
            sink = self._sink
        sink.push()

    def drain(self, complete: Callable[[TopicPartition, int], None]) -> None:
        """Apply queued acknowledgements (poll thread); raise a delivery that was given up."""
        while True:
            try:
                tp, offset = self._acks.get_nowait()
            except queue.Empty:
                break
            complete(tp, offset)
        with self._lock:
            fatal = self._fatal
        if fatal is not None:
            raise fatal

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until every record tied to an offset is acknowledged or given up."""
        with self._lock:
            sink = self._sink
        sink.flush(timeout_s)
        with self._idle:
            return self._idle.wait_for(
                lambda: self._outstanding == 0 or self._fatal is not None, timeout_s
            )

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the resend thread; flush and close the sink."""
        self._closing.set()
        self._retries.put(None)
        self._resender.join(timeout_s)
        with self._lock:
            sink = self._sink
        sink.close(timeout_s)


def _retire(sink: Sink) -> None:
    """Close a replaced sink for good, in bounded time (see the module docstring)."""
    for timeout_s in (RETIRE_TIMEOUT_S, 0.0):
        try:
            sink.close(timeout_s)
            return
        except Exception as exc:  # a broken producer may fail to close too
            log.debug("closing the old producer (timeout %ss) failed: %s", timeout_s, exc)
    log.warning("the old producer could not be closed; its I/O thread may be left running")
