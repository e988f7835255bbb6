"""The attempts topic: start counts of uncommitted images, keyed by group and partition.

:class:`KafkaAttempts` writes one record per partition before the worker
starts images (synchronously: the count must be on the broker before the
image can kill the process) and, on assignment, reads the latest record of
each newly assigned partition. The topic is compacted (the last record
per key is all that matters), so reading it is a scan from its start to its
high-watermark (:mod:`imgstream.kafka_io.scan`). The records are written by
a producer of their own, outside any transaction: an aborted transaction (the worker died)
must not take the count with it. See :mod:`imgstream.commits.attempts`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from kafka.errors import KafkaTimeoutError

from imgstream.commits.attempts import Counts, decode_record, encode_record, record_key
from imgstream.errors import BrokerError
from imgstream.kafka_io.clients import KafkaSink
from imgstream.kafka_io.config.settings import ClientSettings, broker_errors
from imgstream.kafka_io.scan import scan
from imgstream.schema.records import TopicPartition

log = logging.getLogger(__name__)

#: How long a record may take to be acknowledged, in all, before the worker gives up.
#: The broker may be out of reach a while (a network partition, a restart): the
#: record is sent again each time the producer expires it (its delivery timeout,
#: 30 s), and no image starts meanwhile; as long as Delivery tries a result (4 x 30 s).
RECORD_TIMEOUT_S = 120.0


class KafkaAttempts:
    """Reads and writes a group's attempt counts on the attempts topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        worker_id: str,
        settings: ClientSettings | None = None,
    ) -> None:
        self.topic = topic
        self.group = group
        self.worker_id = worker_id
        self._bootstrap, self._settings = bootstrap, settings
        self._sink: KafkaSink | None = self._new_sink()

    def _new_sink(self) -> KafkaSink:
        return KafkaSink(
            self._bootstrap, "imgstream-attempts", linger_ms=0, settings=self._settings
        )

    def _drop_sink(self) -> None:
        """Close the producer (its unsent record fails): the next try makes a new one."""
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.close(0)
            except Exception as exc:  # a broken producer may fail to close too
                log.debug("closing the attempts producer failed: %s", exc)

    def record(self, tp: TopicPartition, counts: Mapping[int, int]) -> None:
        """Write ``tp``'s counts and wait for the broker's acknowledgement.

        Sent again while the broker is out of reach, for up to ``RECORD_TIMEOUT_S``
        in all, by a new producer each time (an idempotent producer whose record
        expired may stay stuck after the broker is back); BrokerError past that.
        """
        value = encode_record(self.group, tp, counts, self.worker_id)
        key = record_key(self.group, tp)
        deadline = time.monotonic() + RECORD_TIMEOUT_S
        tries = 0
        with broker_errors(self._bootstrap, self._settings, action="write"):
            while True:
                tries += 1
                try:
                    if self._sink is None:
                        self._sink = self._new_sink()  # BrokerError while none answers
                    future = self._sink.send_partition(self.topic, 0, key, value)
                    future.get(timeout=max(0.0, deadline - time.monotonic()))
                except (KafkaTimeoutError, BrokerError) as exc:  # expired, or none answers
                    if time.monotonic() >= deadline:
                        raise
                    self._drop_sink()
                    if tries == 1:
                        log.warning(
                            "start counts of %s[%d] not acknowledged (%s): sending them again "
                            "until the broker answers; no image starts meanwhile",
                            tp.topic,
                            tp.partition,
                            exc,
                        )
                    continue
                if tries > 1:
                    log.warning(
                        "start counts of %s[%d] written after %d tries",
                        tp.topic,
                        tp.partition,
                        tries,
                    )
                return

    def load(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, Counts]:
        """The latest counts recorded for each of ``tps`` (absent: none recorded)."""
        wanted = set(tps)
        found: dict[TopicPartition, Counts] = {}
        if wanted:
            for _key, value in scan(self._bootstrap, self.topic, self._settings):
                self._take(value, wanted, found)
        return found

    def _take(
        self, value: bytes | None, wanted: set[TopicPartition], found: dict[TopicPartition, Counts]
    ) -> None:
        if value is None:  # a tombstone
            return
        try:
            group, tp, counts = decode_record(value)
        except ValueError as exc:
            log.warning("skipping a record on %s that is no attempts record: %s", self.topic, exc)
            return
        if group == self.group and tp in wanted:
            found[tp] = counts  # later records replace earlier ones

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the producer."""
        if self._sink is not None:
            self._sink.close(timeout_s)
