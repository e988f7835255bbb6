"""Kafka adapters: the only package that imports ``kafka``.

``config/`` holds the one table of client defaults and client properties
(``settings``; read from a properties file by ``properties``, checked by
``checks``; ``compat`` patches kafka-python's networking) and the error
mapping (worded by ``diagnosis``),
``source`` the consumer-group member, ``clients`` the sink and the topic reader;
``rebalance`` the group listener that runs rebalance handlers off the IO thread;
``links`` the state of each broker link (one warning per broker outage);
``admin`` the offset and group helpers, ``transactional`` the producer of
``--exactly-once``, ``attempts`` the start counts of crash isolation,
``statestore`` the per-source state snapshots, ``scan`` their reading.
Everything is re-exported here.
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
from imgstream.kafka_io.attempts import KafkaAttempts
from imgstream.kafka_io.clients import (
    KafkaSink,
    TopicReader,
    ensure_topics,
    wait_for_broker,
)
from imgstream.kafka_io.config.properties import Secret
from imgstream.kafka_io.config.settings import (
    CLIENT_DEFAULTS,
    PROPERTIES,
    ClientSettings,
    as_broker_error,
    broker_errors,
    client_config,
    load_client_settings,
    worker_settings,
)
from imgstream.kafka_io.rebalance import GroupListener, RebalanceHandler
from imgstream.kafka_io.source import KafkaSource
from imgstream.kafka_io.statestore import KafkaStateStore
from imgstream.kafka_io.transactional import KafkaTransactor, refuse_unreliable_transactions

__all__ = [
    "CLIENT_DEFAULTS",
    "PROPERTIES",
    "ClientSettings",
    "GroupListener",
    "KafkaAttempts",
    "KafkaSink",
    "KafkaSource",
    "KafkaStateStore",
    "KafkaTransactor",
    "PartitionState",
    "RebalanceHandler",
    "Secret",
    "TopicReader",
    "as_broker_error",
    "broker_errors",
    "client_config",
    "commit_group_offsets",
    "ensure_topics",
    "fetch_highwaters",
    "first_offsets_at",
    "group_members",
    "load_client_settings",
    "refuse_unreliable_transactions",
    "start_group_at_end",
    "topic_state",
    "wait_for_broker",
    "worker_settings",
]
