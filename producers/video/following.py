"""The workers' committed offsets, followed for ``capture --frames latest``.

:class:`Following` reads the consumer group's committed offsets on the refs
topic into the :class:`~imgstream.producers.video.backlog.Backlog`, on a
thread of its own, with a consumer that never joins the group.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imgstream.kafka_io import ClientSettings, KafkaSource
    from imgstream.producers.video.backlog import Backlog


class Following:
    """Reads the workers' committed offsets into the backlog of ``--frames latest``,
    on a thread of its own (nothing to do without a backlog)."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topic: str,
        partitions: int,
        kafka: ClientSettings,
        backlog: Backlog | None,
    ) -> None:
        self._args = (bootstrap, group, topic, partitions, kafka)
        self.backlog = backlog
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._source: KafkaSource | None = None

    def start(self, now: Callable[[], float]) -> None:
        """Start following (a consumer that reads the group's offsets, never joins it);
        ``now`` is the monotonic clock."""
        if self.backlog is None:
            return
        from imgstream.kafka_io import KafkaSource
        from imgstream.producers.video.backlog import follow_commits
        from imgstream.schema.records import TopicPartition

        bootstrap, group, topic, n, kafka = self._args
        source = KafkaSource(
            bootstrap,
            group,
            [topic],
            client_id="imgstream-capture",
            settings=kafka,
            partitions=list(range(n)),
        )
        self._source = source

        def committed(partitions: Sequence[int]) -> dict[int, int | None]:
            tps = [TopicPartition(topic, p) for p in partitions]
            return {tp.partition: o for tp, o in source.committed(tps, timeout_s=5.0).items()}

        self._thread = threading.Thread(
            target=follow_commits,
            args=(self.backlog, committed, self._stop.wait, now),
            name="capture-follow-commits",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop following and close the consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._source is not None:
            self._source.close()
