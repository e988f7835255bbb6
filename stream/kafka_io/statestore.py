"""The state topic: per-source state snapshots of stateful pipelines.

:class:`KafkaStateStore` writes snapshot records (at-least-once: acknowledged
before the offsets they go with are committed; ``--exactly-once`` puts them
in the batch's transaction instead) and reads a group's records back when
partitions are assigned. The topic is compacted: the last record of each
group, pipeline, partition and source is all that is kept. See
:mod:`imgstream.commits.state`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from imgstream.kafka_io.clients import KafkaSink
from imgstream.kafka_io.config.settings import ClientSettings, broker_errors
from imgstream.kafka_io.scan import scan
from imgstream.schema.records import TopicPartition

log = logging.getLogger(__name__)

#: How long a snapshot may take to be acknowledged.
WRITE_TIMEOUT_S = 30.0


class KafkaStateStore:
    """Reads and writes one group's state snapshots on the state topic."""

    def __init__(self, bootstrap: str, topic: str, settings: ClientSettings | None = None) -> None:
        self.topic = topic
        self._bootstrap, self._settings = bootstrap, settings
        self._sink = KafkaSink(bootstrap, "imgstream-state", linger_ms=0, settings=settings)

    def write(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Write ``(key, value)`` records and wait until every one is acknowledged."""
        with broker_errors(self._bootstrap, self._settings, action="write"):
            futures = [self._sink.send_partition(self.topic, 0, k, v) for k, v in records]
            for future in futures:
                future.get(timeout=WRITE_TIMEOUT_S)

    def load(self, tps: Sequence[TopicPartition]) -> list[bytes]:
        """The latest value of each key of ``tps`` (every group and pipeline: the caller
        keeps its own)."""
        wanted = {(tp.topic, tp.partition) for tp in tps}
        latest: dict[bytes, bytes] = {}
        if not wanted:
            return []
        for key, value in scan(self._bootstrap, self.topic, self._settings):
            if key is None or value is None:
                continue
            try:
                _group, _pipeline, topic, partition, _source = json.loads(key)
            except (ValueError, TypeError) as exc:
                log.warning("skipping a record on %s with the key %r: %s", self.topic, key, exc)
                continue
            if (topic, partition) in wanted:
                latest[key] = value
        return list(latest.values())

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the producer."""
        self._sink.close(timeout_s)
