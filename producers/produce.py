"""Send refs to the refs topic with an idempotent producer, and report how they spread;
count the refs the broker did not take."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from imgstream.errors import BrokerError
from imgstream.kafka_io import KafkaSink
from imgstream.partitioning import Partitioner, partition_key
from imgstream.schema.codec import encode
from imgstream.schema.records import ImageRef

log = logging.getLogger(__name__)


@dataclass
class ProduceReport:
    """What a produce run did."""

    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    per_partition: Counter[int] = field(default_factory=Counter)
    ids: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Refs per second."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def produce_refs(
    refs: Iterable[ImageRef],
    sink: KafkaSink,
    topic: str,
    partitioner: Partitioner,
    on_sent: Callable[[ImageRef], None] | None = None,
) -> ProduceReport:
    """Send every ref, flush, and count deliveries (raises BrokerError if none got through)."""
    report = ProduceReport()
    started = time.monotonic()
    n = sink.partitions(topic)
    futures: list[tuple[ImageRef, Any]] = []
    for ref in refs:
        partition = partitioner.partition(ref, n)
        futures.append(
            (ref, sink.send_partition(topic, partition, partition_key(ref), encode(ref)))
        )
        report.per_partition[partition] += 1
        if on_sent is not None:
            on_sent(ref)
    sink.flush()
    errors = []
    for ref, future in futures:
        try:
            future.get(timeout=30)
            report.sent += 1
            report.ids.append(ref.id)
        except Exception as exc:
            report.failed += 1
            errors.append(exc)
    report.seconds = time.monotonic() - started
    if futures and report.sent == 0:
        raise BrokerError(f"no ref was delivered to {topic!r}: {errors[0]}")
    return report


class Undelivered:
    """Counts refs the broker did not take (errbacks run on the producer's thread).

    The first is logged at once; then, while they keep failing (a broker away,
    a camera at 5 frames/s), one line a minute with the count, not one per ref.
    """

    def __init__(self, monotonic: Callable[[], float], every_s: float = 60.0) -> None:
        self._monotonic = monotonic
        self._every_s = every_s
        self._lock = threading.Lock()
        self.count = 0
        self._logged_at: float | None = None
        self._logged_count = 0

    def add(self, exc: BaseException) -> None:
        """One more ref not delivered."""
        now = self._monotonic()
        with self._lock:
            self.count += 1
            due = self._logged_at is None or now - self._logged_at >= self._every_s
            total = self.count
            if due:
                since, self._logged_count = total - self._logged_count, total
                self._logged_at = now
        if due:
            log.error("%d ref(s) not delivered (%d in all): %s", since, total, exc)
