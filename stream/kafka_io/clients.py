"""Kafka clients: the client factories, a sink, a topic reader, topic creation.

(The group member that yields raw messages, :class:`~imgstream.kafka_io.source.KafkaSource`,
has a module of its own.) :class:`KafkaSink` sends bytes with a completion callback, and the helpers
create topics and wait for a broker. Every client is configured by
:func:`~imgstream.kafka_io.config.settings.client_config` from one defaults table,
and creating one turns an unreachable broker into a
:class:`~imgstream.errors.BrokerError` within the connect timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError, TopicAuthorizationFailedError

from imgstream.errors import BrokerError
from imgstream.kafka_io.config import compat
from imgstream.kafka_io.config.settings import ClientSettings, broker_errors, client_config
from imgstream.kafka_io.links import watch_broker_links
from imgstream.schema.records import Message, TopicPartition
from imgstream.schema.topics import TopicSettings

log = logging.getLogger(__name__)


def new_consumer(
    bootstrap: str,
    settings: ClientSettings | None = None,
    tuned: Mapping[str, Any] | None = None,
    **fixed: Any,
) -> KafkaConsumer:
    """A consumer from the defaults table; BrokerError if no broker answers in time."""
    compat.apply()
    watch_broker_links()
    with broker_errors(bootstrap, settings):
        return KafkaConsumer(
            **client_config(
                "consumer", KafkaConsumer.DEFAULT_CONFIG, bootstrap, settings, tuned, **fixed
            )
        )


def new_producer(
    bootstrap: str,
    settings: ClientSettings | None = None,
    tuned: Mapping[str, Any] | None = None,
    **fixed: Any,
) -> KafkaProducer:
    """A producer from the defaults table; BrokerError if no broker answers in time."""
    compat.apply()
    watch_broker_links()
    with broker_errors(bootstrap, settings):
        return KafkaProducer(
            **client_config(
                "producer", KafkaProducer.DEFAULT_CONFIG, bootstrap, settings, tuned, **fixed
            )
        )


def close_producer(producer: KafkaProducer, timeout_s: float) -> None:
    """Close ``producer``, waiting up to ``timeout_s`` for its unsent records; abandon the rest.

    kafka-python's ``close()`` flushes first and raises KafkaTimeoutError when
    records are still unsent at the timeout (a broker out of reach), before it
    stops its I/O thread: the producer would live on, thread and connections,
    and its ``__del__`` would try again later and print a traceback. Here the
    records left are failed instead (their callbacks report it) and the
    producer is closed.
    """
    try:
        producer.close(timeout=timeout_s)
        return
    except KafkaTimeoutError:
        log.debug("closing a producer with records unsent: abandoning them")
    producer._sender.force_close()  # fails what is left, then stops the I/O thread
    try:
        producer.close(timeout=max(timeout_s, 1.0))
    except KafkaTimeoutError as exc:  # the I/O thread did not even fail them in time
        log.debug("closing a producer: %s", exc)


def new_admin(
    bootstrap: str, settings: ClientSettings | None = None, **fixed: Any
) -> KafkaAdminClient:
    """An admin client from the defaults table; BrokerError if no broker answers in time."""
    compat.apply()
    watch_broker_links()
    with broker_errors(bootstrap, settings):
        return KafkaAdminClient(
            **client_config("admin", KafkaAdminClient.DEFAULT_CONFIG, bootstrap, settings, **fixed)
        )


Ack = Callable[[BaseException | None], None]


class KafkaSink:
    """An idempotent producer of byte records with completion callbacks."""

    def __init__(
        self,
        bootstrap: str,
        client_id: str = "imgstream",
        linger_ms: int | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        tuned = {} if linger_ms is None else {"linger_ms": linger_ms}
        self._producer = new_producer(bootstrap, settings, tuned, client_id=client_id)

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

    def push(self) -> None:
        """Send the records lingering in the producer now, waiting at most 50 ms.

        The wait only lets the sender thread see the request: acknowledgements
        and failures still arrive through the records' callbacks.
        """
        try:
            self._producer.flush(timeout=0.05)
        except Exception as exc:  # timed out, or a broken producer: its records report it
            log.debug("push: %s", exc)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every sent record is acknowledged or failed."""
        self._producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush (up to ``timeout_s``) and close; records still unsent then fail."""
        close_producer(self._producer, timeout_s)


def wait_for_broker(
    bootstrap: str, timeout_s: float = 15.0, settings: ClientSettings | None = None
) -> None:
    """Block until the broker answers a metadata request, or raise BrokerError.

    The client retries the bootstrap servers itself for up to ``timeout_s``;
    ``settings`` give its properties (TLS, SASL).
    """
    settings = dataclasses.replace(settings or ClientSettings(), connect_timeout_s=timeout_s)
    admin = new_admin(bootstrap, settings, request_timeout_ms=3000)
    try:
        with broker_errors(bootstrap, settings):
            admin.list_topics()
    finally:
        admin.close()


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    settings: ClientSettings | None = None,
    roles: Mapping[str, str] | None = None,
    layout: TopicSettings | None = None,
) -> None:
    """Create topics (name -> partitions) that do not exist yet; existing ones are left alone.

    ``roles`` (name -> ``refs``/``results``/``dlq``) give each new topic the
    configs of its role, and ``layout`` the user's overrides and replication
    factor (see :mod:`imgstream.schema.topics`).
    """
    layout = layout or TopicSettings()
    roles = roles or {}
    admin = new_admin(bootstrap, settings)
    try:
        with broker_errors(bootstrap, settings):
            existing = set(admin.list_topics())
        new = {
            name: new_topic_request(n, layout, roles.get(name))
            for name, n in topics.items()
            if name not in existing
        }
        if new:
            # a topic this principal may not DESCRIBE looks missing: name them all
            with (
                broker_errors(bootstrap, settings, action="describe or create"),
                contextlib.suppress(TopicAlreadyExistsError),
                _naming(set(new)),
            ):
                admin.create_topics(new)
    finally:
        admin.close()


def new_topic_request(partitions: int, layout: TopicSettings, role: str | None) -> dict[str, Any]:
    """One topic of a CreateTopics request (kafka-python's dict form)."""
    return {
        "num_partitions": partitions,
        "replication_factor": layout.replicas,
        "configs": layout.configs(role),
    }


@contextlib.contextmanager
def _naming(topics: set[str]) -> Iterator[None]:
    """A topic authorization error names ``topics`` (the admin client's names none)."""
    try:
        yield
    except TopicAuthorizationFailedError:
        raise TopicAuthorizationFailedError(topics) from None


class TopicReader:
    """Reads whole topics from the start without a group (assign + seek)."""

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        fetch_max_wait_ms: int = 50,
        settings: ClientSettings | None = None,
        fetch_min_bytes: int = 1,
    ) -> None:
        # ``fetch_min_bytes`` over 1 lets the broker gather records for up to
        # ``fetch_max_wait_ms`` before answering: fewer, fuller fetches for a
        # reader that does not need each record the moment it lands.
        tuned = {"fetch_max_wait_ms": fetch_max_wait_ms, "fetch_min_bytes": fetch_min_bytes}
        self._consumer = new_consumer(bootstrap, settings, tuned, group_id=None)
        self._bootstrap, self._settings = bootstrap, settings
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
        with broker_errors(self._bootstrap, self._settings, action="read"):
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        return [
            Message(tp.topic, tp.partition, r.offset, r.key, r.value, r.timestamp or 0)
            for tp, records in batches.items()
            for r in records
        ]

    def positions(self) -> dict[TopicPartition, int]:
        """The next offset to read of every assigned partition.

        With transactions, commit and abort markers take offsets that no record
        is read at: "read up to the end" is position >= high-watermark, never
        "last record's offset + 1 == high-watermark".
        """
        return {
            TopicPartition(tp.topic, tp.partition): int(self._consumer.position(tp))
            for tp in self._assigned
        }

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close(autocommit=False)
