"""Kafka clients: a group member that yields raw messages, a sink, a topic reader.

:class:`KafkaSource` turns consumed records into :class:`~imgstream.records.Message`
values (bytes in, bytes out: no deserializer can raise inside ``poll()``),
:class:`KafkaSink` sends bytes with a completion callback, and the helpers
create topics and wait for a broker. Client settings are tuned for the
embedded broker and work on Apache Kafka too.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from imgstream.errors import BrokerError
from imgstream.records import Message, TopicPartition

log = logging.getLogger(__name__)

#: Settings that matter on the embedded broker (a group join otherwise takes ~20 s).
GROUP_DEFAULTS: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 60000,
}


class RebalanceHandler(Protocol):
    """Told about partition revocation and assignment, on the poll thread."""

    def on_revoked(self, tps: list[TopicPartition]) -> None: ...

    def on_assigned(self, tps: list[TopicPartition]) -> None: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, handler: RebalanceHandler) -> None:
        self.handler = handler

    def on_partitions_revoked(self, revoked: Iterable[KTP]) -> None:
        self.handler.on_revoked([TopicPartition(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned: Iterable[KTP]) -> None:
        self.handler.on_assigned([TopicPartition(tp.topic, tp.partition) for tp in assigned])


class KafkaSource:
    """A consumer-group member that yields raw messages."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: Sequence[str],
        handler: RebalanceHandler | None = None,
        fetch_max_wait_ms: int = 20,
        max_poll_records: int = 500,
        client_id: str = "imgstream",
        **overrides: Any,
    ) -> None:
        config: dict[str, Any] = dict(GROUP_DEFAULTS)
        config.update(overrides)
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=group,
                client_id=client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=fetch_max_wait_ms,
                max_poll_records=max_poll_records,
                **config,
            )
        except KafkaError:
            raise BrokerError(f"no broker answers at {bootstrap}") from None
        if handler is not None:
            self._consumer.subscribe(list(topics), listener=_Listener(handler))
        else:
            self._consumer.subscribe(list(topics))

    def poll(self, timeout_s: float) -> list[Message]:
        """Messages fetched within ``timeout_s`` (possibly none)."""
        batches = self._consumer.poll(timeout_ms=max(0, int(timeout_s * 1000)))
        out: list[Message] = []
        for tp, records in batches.items():
            for r in records:
                out.append(
                    Message(tp.topic, tp.partition, r.offset, r.key, r.value, r.timestamp or 0)
                )
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit next-to-read offsets synchronously."""
        self._consumer.commit(
            {KTP(tp.topic, tp.partition): OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
        )

    def assignment(self) -> list[TopicPartition]:
        """Partitions currently assigned."""
        return [TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()]

    def pause(self, tps: Iterable[TopicPartition]) -> None:
        """Stop fetching from these partitions (the member keeps heartbeating)."""
        self._consumer.pause(*[KTP(*tp) for tp in tps])

    def resume(self, tps: Iterable[TopicPartition]) -> None:
        """Fetch from these partitions again."""
        self._consumer.resume(*[KTP(*tp) for tp in tps])

    def highwater(self, tp: TopicPartition) -> int | None:
        """The high-watermark seen in the last fetch (``end_offsets`` is unreliable)."""
        hw = self._consumer.highwater(KTP(*tp))
        return int(hw) if hw is not None else None

    def close(self) -> None:
        """Leave the group without auto-committing."""
        self._consumer.close(autocommit=False)


Ack = Callable[[BaseException | None], None]


class KafkaSink:
    """An idempotent producer of byte records with completion callbacks."""

    def __init__(self, bootstrap: str, client_id: str = "imgstream", linger_ms: int = 5) -> None:
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id=client_id,
                acks="all",
                enable_idempotence=True,
                linger_ms=linger_ms,
                retries=5,
                delivery_timeout_ms=30000,
                request_timeout_ms=10000,
            )
        except KafkaError:
            raise BrokerError(f"no broker answers at {bootstrap}") from None

    def send(self, topic: str, key: bytes | None, value: bytes, ack: Ack) -> None:
        """Send one record; ``ack(None)`` on success, ``ack(exc)`` on failure."""
        try:
            future = self._producer.send(topic, key=key, value=value)
        except Exception as exc:  # closed or broken producer: report, do not raise
            ack(exc)
            return
        future.add_callback(lambda _md: ack(None))
        future.add_errback(ack)

    def send_partition(self, topic: str, partition: int, key: bytes | None, value: bytes) -> Any:
        """Send to an explicit partition; returns the future."""
        return self._producer.send(topic, key=key, value=value, partition=partition)

    def partitions(self, topic: str) -> int:
        """How many partitions a topic has."""
        parts = self._producer.partitions_for(topic)
        if not parts:
            raise BrokerError(f"topic {topic!r} has no partitions")
        return len(parts)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every sent record is acknowledged or failed."""
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and close."""
        self._producer.close(timeout=timeout_s)


def wait_for_broker(bootstrap: str, timeout_s: float = 15.0) -> None:
    """Block until the broker answers a metadata request, or raise BrokerError."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"no broker answered at {bootstrap} within {timeout_s:.0f}s: {last}")


def ensure_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create topics (name -> partitions) that do not exist yet."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    except KafkaError:
        raise BrokerError(f"no broker answers at {bootstrap}") from None
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(t, n, 1) for t, n in topics.items() if t not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
    finally:
        admin.close()


class TopicReader:
    """Reads whole topics from the start without a group (assign + seek)."""

    def __init__(self, bootstrap: str, topics: Sequence[str], fetch_max_wait_ms: int = 50) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        self._topics = list(topics)
        self._assigned: set[KTP] = set()
        self._refresh()

    def _refresh(self) -> None:
        tps: set[KTP] = set()
        for topic in self._topics:
            for p in self._consumer.partitions_for_topic(topic) or ():
                tps.add(KTP(topic, p))
        if tps != self._assigned:
            new = tps - self._assigned
            self._consumer.assign(list(tps))
            if new:
                self._consumer.seek_to_beginning(*new)
            self._assigned = tps

    def poll(self, timeout_s: float) -> list[Message]:
        """Messages of every partition of the topics."""
        if not self._assigned:
            self._refresh()
            if not self._assigned:
                time.sleep(timeout_s)
                return []
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [
            Message(tp.topic, tp.partition, r.offset, r.key, r.value, r.timestamp or 0)
            for tp, records in batches.items()
            for r in records
        ]

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close(autocommit=False)
