"""Kafka adapters: the only package that imports ``kafka``.

``clients`` holds the consumer-group source, the sink and the topic reader;
``admin`` the offset and group helpers. Everything is re-exported here.
"""

from imgstream.kafka_io.admin import (
    PartitionState,
    commit_group_offsets,
    fetch_highwaters,
    first_offsets_at,
    group_members,
    start_group_at_end,
    topic_state,
)
from imgstream.kafka_io.clients import (
    GROUP_DEFAULTS,
    KafkaSink,
    KafkaSource,
    RebalanceHandler,
    TopicReader,
    ensure_topics,
    wait_for_broker,
)

__all__ = [
    "GROUP_DEFAULTS",
    "KafkaSink",
    "KafkaSource",
    "PartitionState",
    "RebalanceHandler",
    "TopicReader",
    "commit_group_offsets",
    "ensure_topics",
    "fetch_highwaters",
    "first_offsets_at",
    "group_members",
    "start_group_at_end",
    "topic_state",
    "wait_for_broker",
]
