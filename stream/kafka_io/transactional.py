"""The transactional producer (``--exactly-once``) and the broker check it needs.

:class:`KafkaTransactor` writes one batch's records and its consumer offsets
in one Kafka transaction (kafka-python's ``begin_transaction``,
``send_offsets_to_transaction`` with the consumer's group metadata, so a
member of a stale generation is fenced by the broker, and
``commit_transaction``). Every wait is bounded: kafka-python's own calls wait
forever on a broker that does not answer, so the adapter waits on their
results itself. A transaction that fails is aborted and raised as
:class:`~imgstream.errors.TransactionFailed`; a fenced producer, or one whose
commit or abort did not finish in time, is closed and replaced (the new one's
``init_transactions`` completes or aborts whatever the old one left open) and
raised as :class:`~imgstream.errors.ProducerFenced`. A replacement that cannot
reach the broker (a network partition, a broker restarting) is not fatal:
the transactor stays without a producer and makes one at the next commit,
which fails with :class:`~imgstream.errors.TransactionFailed` until the broker
answers again (the worker rewinds and redoes the work meanwhile). Only the
first producer, at start-up, turns an unreachable broker into a
:class:`~imgstream.errors.BrokerError`.

:func:`refuse_unreliable_transactions` stops ``--exactly-once`` on the
embedded Tansu broker, which advertises the transaction APIs without keeping
their guarantees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka import TopicPartition as KTP
from kafka.errors import (
    InvalidProducerEpochError,
    KafkaError,
    KafkaTimeoutError,
    ProducerFencedError,
)
from kafka.structs import OffsetAndMetadata

from imgstream.commits.transactions import COMMIT_TIMEOUT_S, TRANSACTION_TIMEOUT_S, Staged
from imgstream.errors import (
    BrokerError,
    ProducerFenced,
    TransactionFailed,
    UnreliableTransactions,
)
from imgstream.kafka_io.clients import close_producer, new_admin, new_producer
from imgstream.kafka_io.config.settings import ClientSettings, broker_errors
from imgstream.schema.records import TopicPartition

log = logging.getLogger(__name__)

#: Errors after which the producer cannot be used again.
_FATAL = (ProducerFencedError, InvalidProducerEpochError)

#: Cluster ids of brokers whose transactions cannot be trusted (Tansu's default id).
UNRELIABLE_CLUSTER_PREFIXES = ("tansu",)


class KafkaTransactor:
    """A transactional producer: one :meth:`commit` per batch of records."""

    def __init__(
        self,
        bootstrap: str,
        transactional_id: str,
        group_metadata: Callable[[], Any],
        settings: ClientSettings | None = None,
        client_id: str = "imgstream",
        timeout_s: float = COMMIT_TIMEOUT_S,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self._bootstrap, self._settings = bootstrap, settings
        self._id = transactional_id
        self._client_id = client_id
        self._group_metadata = group_metadata
        self._timeout_ms = int(timeout_s * 1000)
        self._on_restart = on_restart
        #: None after a replacement could not reach the broker: made at the next commit.
        self._producer: KafkaProducer | None = self._new_producer()
        #: Producers replaced after a fence or a stuck commit.
        self.restarts = 0

    def _new_producer(self) -> KafkaProducer:
        producer = new_producer(
            self._bootstrap,
            self._settings,
            client_id=self._client_id,
            transactional_id=self._id,
            transaction_timeout_ms=int(TRANSACTION_TIMEOUT_S * 1000),
            max_block_ms=self._timeout_ms,
            enable_idempotence=True,
            acks="all",
        )
        with broker_errors(self._bootstrap, self._settings, action="initialise transactions for"):
            producer.init_transactions()  # bounded by max_block_ms
        return producer

    def commit(self, records: tuple[Staged, ...], offsets: dict[TopicPartition, int]) -> None:
        """Write ``records`` and commit ``offsets`` atomically, or raise TransactionFailed.

        1. take the consumer's group metadata (a member out of its group sends
        nothing); 2. begin a transaction; 3. send every record; 4. add the offsets
        with that metadata; 5. commit, waiting at most the timeout. On failure the
        transaction is aborted (or the producer replaced).
        """
        producer = self._ready()
        # One snapshot, taken first: the broker fences the transaction by it, and a
        # member that has lost its generation raises TransactionFailed before a record
        # leaves (see KafkaSource.group_metadata).
        metadata = self._group_metadata() if offsets else None
        try:
            producer.begin_transaction()
            for r in records:
                producer.send(r.topic, key=r.key, value=r.value)
            if offsets:
                kafka_offsets = {
                    KTP(tp.topic, tp.partition): OffsetAndMetadata(o, "", -1)
                    for tp, o in offsets.items()
                }
                manager = producer._transaction_manager  # bounded wait (see the module doc)
                self._wait(
                    manager.send_offsets_to_transaction(kafka_offsets, metadata),
                    "adding the offsets",
                )
            self._wait(producer._transaction_manager.begin_commit(), "committing")
        except _FATAL as exc:
            self._replace(f"the producer was fenced: {exc}")
            raise ProducerFenced(str(exc)) from exc
        except (KafkaError, TimeoutError) as exc:
            self._abort(exc)
            raise TransactionFailed(str(exc)) from exc

    def _ready(self) -> KafkaProducer:
        """The producer; made now if the last replacement could not reach the broker.

        Raises TransactionFailed while the broker still does not answer (each
        try waits up to the connect timeout).
        """
        if self._producer is None:
            try:
                self._producer = self._new_producer()
            except BrokerError as exc:
                raise TransactionFailed(f"no transactional producer yet: {exc}") from None
            log.warning("the transactional producer is back")
        return self._producer

    def _wait(self, result: Any, what: str) -> None:
        assert self._producer is not None
        self._producer._sender.wakeup()
        if not result.wait(timeout_ms=self._timeout_ms):
            raise KafkaTimeoutError(f"{what} took over {self._timeout_ms} ms")

    def _abort(self, cause: BaseException) -> None:
        """Abort the open transaction; replace the producer if even that fails."""
        log.warning("transaction failed (%s): aborting it", cause)
        assert self._producer is not None
        manager = self._producer._transaction_manager
        try:
            if manager.has_fatal_error():
                raise KafkaError("the producer is in a fatal state")
            self._wait(manager.begin_abort(), "aborting")
        except Exception as exc:  # no transaction, a stuck, fatal or fenced state: start afresh
            self._replace(f"the abort failed too: {exc}")

    def _replace(self, why: str) -> None:
        """Close the producer and make a new one (its ``init_transactions`` fences the old).

        A broker that does not answer within the connect timeout leaves the
        transactor without a producer (see :meth:`_ready`), never raises.
        """
        log.warning("recreating the transactional producer: %s", why)
        old, self._producer = self._producer, None
        if old is not None:
            try:
                close_producer(old, 0)
            except Exception as exc:  # a broken producer may fail to close too
                log.debug("closing the old producer failed: %s", exc)
        self.restarts += 1
        if self._on_restart is not None:
            self._on_restart()
        try:
            self._producer = self._new_producer()
        except BrokerError as exc:
            log.warning("no transactional producer until the broker answers again: %s", exc)

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the producer (an open transaction is aborted by the broker)."""
        if self._producer is not None:
            close_producer(self._producer, timeout_s)


def refuse_unreliable_transactions(bootstrap: str, settings: ClientSettings | None = None) -> None:
    """Raise UnreliableTransactions if ``bootstrap`` is a Tansu broker.

    Tansu answers ApiVersions with every transaction API, so the check is its
    cluster id (``tansu_cluster`` unless configured otherwise).
    """
    admin = new_admin(bootstrap, settings)
    try:
        with broker_errors(bootstrap, settings):
            cluster_id = str(admin.describe_cluster().get("cluster_id") or "")
    finally:
        admin.close()
    if cluster_id.lower().startswith(UNRELIABLE_CLUSTER_PREFIXES):
        raise UnreliableTransactions(
            f"--exactly-once: the broker at {bootstrap} is Tansu (cluster id {cluster_id!r}), "
            "whose transactions are unreliable; use Apache Kafka"
        )
