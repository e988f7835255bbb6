"""Kafka clients: a group member that yields raw messages, a sink, a topic reader.

:class:`KafkaSource` turns consumed records into :class:`~imgstream.records.Message`
values (bytes in, bytes out: no deserializer can raise inside ``poll()``),
:class:`KafkaSink` sends bytes with a completion callback, and the helpers
create topics and wait for a broker. Every client is configured by
:func:`~imgstream.kafka_io.settings.client_config` from one defaults table,
and creating one turns an unreachable broker into a
:class:`~imgstream.errors.BrokerError` within the connect timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError, TopicAuthorizationFailedError
from kafka.structs import OffsetAndMetadata

from imgstream.errors import BrokerError, TransactionFailed
from imgstream.kafka_io import compat
from imgstream.kafka_io.links import watch_broker_links
from imgstream.kafka_io.rebalance import GroupListener, RebalanceHandler, loop_sleep
from imgstream.kafka_io.settings import ClientSettings, broker_errors, client_config
from imgstream.records import Message, TopicPartition
from imgstream.topics import TopicSettings
from imgstream.transactions import TRANSACTION_TIMEOUT_S

log = logging.getLogger(__name__)

#: How long reading a group's committed offsets may take. Read with read_committed,
#: an offset that an open transaction holds is *unstable*, and the broker makes the
#: reader wait until that transaction ends: a zombie (a worker paused or cut off
#: after sending its offsets, before committing) holds it until the broker aborts the
#: transaction, its timeout plus the broker's cleanup interval
#: (``transaction.abort.timed.out.transaction.cleanup.interval.ms``, 10 s) later.
COMMITTED_TIMEOUT_S = TRANSACTION_TIMEOUT_S + 20.0


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


class KafkaSource:
    """A consumer-group member that yields raw messages."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: Sequence[str],
        handler: RebalanceHandler | None = None,
        client_id: str = "imgstream",
        settings: ClientSettings | None = None,
        partitions: Sequence[int] = (),
        **overrides: Any,
    ) -> None:
        # ``partitions``: read these partitions of the (one) topic directly, without
        # joining the group (no join wait); the group still holds the commits, and
        # ``handler.on_assigned`` is called once, from the first poll.
        # ``overrides`` (max_poll_records, fetch_max_wait_ms, ...) replace table
        # defaults; None means "keep the default".
        tuned = {k: v for k, v in overrides.items() if v is not None}
        self._bootstrap, self._settings = bootstrap, settings
        self._consumer = new_consumer(
            bootstrap,
            settings,
            **tuned,
            group_id=group,
            client_id=client_id,
            # commits are made by the runner's checkpoint only, never behind its back
            enable_auto_commit=False,
        )
        self._handler = handler
        self._unannounced: list[TopicPartition] = []
        #: A member of the group (subscribed), not a reader of fixed partitions.
        self._member = not partitions
        if partitions:
            (topic,) = topics
            self._unannounced = [TopicPartition(topic, p) for p in partitions]
            self._consumer.assign([KTP(topic, p) for p in partitions])
        elif handler is not None:
            listener = GroupListener(
                handler,
                loop_sleep(self._consumer),
                lambda tps: self._consumer.resume(*tps),
            )
            self._consumer.subscribe(list(topics), listener=listener)
        else:
            self._consumer.subscribe(list(topics))
        # Fetch metadata now, subscribed, before the first poll joins the group: a
        # leader that assigns before the topics' partitions are known gives out
        # nothing, then sees the metadata change and rebalances again at once
        # (on Apache Kafka every worker started with an empty assignment or two).
        with broker_errors(bootstrap, settings):
            self._consumer.topics()

    def poll(self, timeout_s: float) -> list[Message]:
        """Messages fetched within ``timeout_s`` (possibly none).

        A refused ACL (topic or group) is a BrokerError saying what was refused.
        """
        if self._unannounced:
            tps, self._unannounced = self._unannounced, []
            if self._handler is not None:
                self._handler.on_assigned(tps)
        with broker_errors(self._bootstrap, self._settings, action="read"):
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

    def group_metadata(self) -> Any:
        """The member's group metadata (id, generation, member id) for a transaction.

        Raises TransactionFailed while the member is out of its group: evicted (a
        zombie back from a pause or a network partition) or not yet in a new
        generation. Its metadata then has no member id and generation, and the
        broker takes a transactional offset commit without them as one from outside
        any group, unfenced: the zombie's stale batch would commit over the work of
        the member that now owns its partitions.
        """
        metadata = self._consumer.group_metadata()
        if self._member and (metadata.generation_id < 0 or not metadata.member_id):
            raise TransactionFailed(
                "this worker is out of its consumer group (evicted, or between "
                "generations): its offsets cannot be committed where the group fences them"
            )
        return metadata

    def rewind(self, tps: Iterable[TopicPartition]) -> None:
        """Seek each partition back to its committed offset (the beginning if none)."""
        with broker_errors(self._bootstrap, self._settings, action="read"):
            for tp in tps:
                ktp = KTP(tp.topic, tp.partition)
                committed = self._consumer.committed(ktp)
                if committed is None:
                    self._consumer.seek_to_beginning(ktp)
                else:
                    self._consumer.seek(ktp, committed)

    def committed(
        self, tps: Iterable[TopicPartition], timeout_s: float = COMMITTED_TIMEOUT_S
    ) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (next to read) of these partitions; None: none yet.

        Waits while a transaction still holds one (see :data:`COMMITTED_TIMEOUT_S`);
        BrokerError when they cannot be read within ``timeout_s`` in all.
        """
        out: dict[TopicPartition, int | None] = {}
        deadline = time.monotonic() + timeout_s
        with broker_errors(self._bootstrap, self._settings, action="read"):
            for tp in tps:
                ktp = KTP(tp.topic, tp.partition)
                left_ms = max(1, int((deadline - time.monotonic()) * 1000))
                try:
                    offset = self._consumer.committed(ktp, timeout_ms=left_ms)
                except KafkaTimeoutError:
                    raise BrokerError(
                        f"the committed offset of {tp.topic}[{tp.partition}] could not be read "
                        f"within {timeout_s:.0f}s at {self._bootstrap}: no broker answers, or "
                        "a transaction that never ends holds it"
                    ) from None
                out[tp] = None if offset is None else int(offset)
        return out

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
    factor (see :mod:`imgstream.topics`).
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
