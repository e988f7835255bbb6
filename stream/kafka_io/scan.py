"""Reading a small compacted topic from its start to its end, without a group.

The attempts topic (crash isolation) and the state topic (per-source state)
are read this way when partitions are assigned: every record up to the
high-watermark seen when the read began, oldest first.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from kafka import TopicPartition as KTP

from imgstream.errors import BrokerError
from imgstream.kafka_io.admin import fetch_highwaters
from imgstream.kafka_io.clients import new_consumer
from imgstream.kafka_io.config.settings import ClientSettings, broker_errors

#: How long reading a topic to its end may take.
READ_TIMEOUT_S = 30.0


def scan(
    bootstrap: str, topic: str, settings: ClientSettings | None = None
) -> Iterator[tuple[bytes | None, bytes | None]]:
    """``(key, value)`` of every record of every partition of ``topic``, up to its end."""
    consumer = new_consumer(bootstrap, settings, enable_auto_commit=False, fetch_max_wait_ms=50)
    try:
        with broker_errors(bootstrap, settings, action="read"):
            parts = sorted(consumer.partitions_for_topic(topic) or ())
            if not parts:
                return
            tps = [KTP(topic, p) for p in parts]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = fetch_highwaters(consumer, tps)
            consumer.seek_to_beginning(*tps)
            deadline = time.monotonic() + READ_TIMEOUT_S
            left = {tp for tp in tps if ends[tp] > 0}
            while left:
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"could not read {topic} to its end within {READ_TIMEOUT_S:.0f}s"
                    )
                batches = consumer.poll(timeout_ms=500)
                for tp, records in batches.items():
                    for r in records:
                        if r.offset < ends[tp]:
                            yield r.key, r.value
                for tp in list(left):
                    if consumer.position(tp) >= ends[tp]:
                        left.discard(tp)
    finally:
        consumer.close(autocommit=False)
