"""Kafka adapters: the only package that imports ``kafka``.

``settings`` holds the one table of client defaults and the error mapping,
``clients`` the consumer-group source, the sink and the topic reader;
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
    KafkaSink,
    KafkaSource,
    RebalanceHandler,
    TopicReader,
    ensure_topics,
    wait_for_broker,
)
from imgstream.kafka_io.settings import (
    CLIENT_DEFAULTS,
    ClientSettings,
    as_broker_error,
    broker_errors,
    client_config,
)

__all__ = [
    "CLIENT_DEFAULTS",
    "ClientSettings",
    "KafkaSink",
    "KafkaSource",
    "PartitionState",
    "RebalanceHandler",
    "TopicReader",
    "as_broker_error",
    "broker_errors",
    "client_config",
    "commit_group_offsets",
    "ensure_topics",
    "fetch_highwaters",
    "first_offsets_at",
    "group_members",
    "start_group_at_end",
    "topic_state",
    "wait_for_broker",
]
