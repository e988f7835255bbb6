"""KafkaSource: a consumer-group member that yields raw messages.

Consumed records become :class:`~imgstream.schema.records.Message` values (bytes in,
bytes out: no deserializer can raise inside ``poll()``); commits, pauses,
rewinds and the group's committed offsets go through it. Created from the one
defaults table (:func:`~imgstream.kafka_io.clients.new_consumer`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from kafka import TopicPartition as KTP
from kafka.errors import KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from imgstream.commits.transactions import TRANSACTION_TIMEOUT_S
from imgstream.errors import BrokerError, TransactionFailed
from imgstream.kafka_io.clients import new_consumer
from imgstream.kafka_io.config.settings import ClientSettings, broker_errors
from imgstream.kafka_io.rebalance import GroupListener, RebalanceHandler, loop_sleep
from imgstream.schema.records import Message, TopicPartition

log = logging.getLogger(__name__)

#: How long reading a group's committed offsets may take. Read with read_committed,
#: an offset that an open transaction holds is *unstable*, and the broker makes the
#: reader wait until that transaction ends: a zombie (a worker paused or cut off
#: after sending its offsets, before committing) holds it until the broker aborts the
#: transaction, its timeout plus the broker's cleanup interval
#: (``transaction.abort.timed.out.transaction.cleanup.interval.ms``, 10 s) later.
COMMITTED_TIMEOUT_S = TRANSACTION_TIMEOUT_S + 20.0


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
