"""Delivery of records: send through a replaceable sink, collect acknowledgements.

Records are sent from batch threads; the broker's acknowledgements arrive on
the producer's I/O thread and are queued here. The poll thread drains the
queue (:meth:`Delivery.drain`), marking delivered messages complete and
re-sending failed ones on a freshly made sink: an idempotent producer can stay
broken after a broker restart. After ``MAX_SEND_ATTEMPTS`` a record is given
up with :class:`~imgstream.errors.DeliveryError`, and its offset is never
committed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from imgstream.errors import DeliveryError
from imgstream.records import TopicPartition

log = logging.getLogger(__name__)

MAX_SEND_ATTEMPTS = 4

Ack = Callable[[BaseException | None], None]


class Sink(Protocol):
    """Where records go; ``ack`` is called once per record, from any thread."""

    def send(self, topic: str, key: bytes | None, value: bytes, ack: Ack) -> None: ...
    def flush(self, timeout_s: float | None = None) -> None: ...
    def close(self, timeout_s: float = 5.0) -> None: ...


@dataclass(frozen=True)
class _Ack:
    tp: TopicPartition
    offset: int
    error: BaseException | None
    topic: str
    key: bytes | None
    value: bytes
    attempt: int


class Delivery:
    """Sends records and turns acknowledgements into completed offsets."""

    def __init__(self, sink_factory: Callable[[], Sink], on_restart: Callable[[], None]) -> None:
        self._sink_factory = sink_factory
        self._on_restart = on_restart
        self._lock = threading.Lock()
        self._sink = sink_factory()
        self._acks: queue.SimpleQueue[_Ack] = queue.SimpleQueue()

    def _current(self) -> Sink:
        with self._lock:
            return self._sink

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        origin: tuple[TopicPartition, int] | None,
        attempt: int = 1,
    ) -> None:
        """Send a record; with an ``origin`` message, its acknowledgement is queued."""

        def ack(error: BaseException | None) -> None:
            if origin is not None:
                self._acks.put(_Ack(origin[0], origin[1], error, topic, key, value, attempt))
            elif error is not None:
                log.warning("record not delivered (not tied to an offset): %s", error)

        self._current().send(topic, key, value, ack)

    def drain(self, complete: Callable[[TopicPartition, int], None]) -> None:
        """Apply queued acknowledgements (poll thread): complete or re-send."""
        restarted = False
        while True:
            try:
                ack = self._acks.get_nowait()
            except queue.Empty:
                return
            if ack.error is None:
                complete(ack.tp, ack.offset)
                continue
            if ack.attempt >= MAX_SEND_ATTEMPTS:
                raise DeliveryError(
                    f"could not deliver the record of {ack.tp.topic}[{ack.tp.partition}]@"
                    f"{ack.offset} after {ack.attempt} attempts: {ack.error}"
                )
            log.warning("record not delivered (%s); recreating the producer", ack.error)
            if not restarted:
                self._restart()
                restarted = True
            self.send(ack.topic, ack.key, ack.value, (ack.tp, ack.offset), ack.attempt + 1)

    def _restart(self) -> None:
        with self._lock:
            old, self._sink = self._sink, self._sink_factory()
        self._on_restart()
        try:
            old.close(0.5)
        except Exception as exc:  # a broken producer may fail to close too
            log.debug("closing the old producer failed: %s", exc)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every sent record is acknowledged or failed."""
        self._current().flush(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and close the sink."""
        self._current().close(timeout_s)
