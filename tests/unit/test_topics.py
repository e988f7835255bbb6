"""Topic settings by role: defaults, the user's overrides, and refused items."""

from __future__ import annotations

import pytest

from imgstream.config import WorkerConfig
from imgstream.errors import ConfigError
from imgstream.kafka_io.clients import new_topic_request
from imgstream.schema.topics import (
    DLQ_RETENTION_MS,
    REFS_RETENTION_MS,
    ROLES,
    TopicSettings,
    parse_topic_configs,
    topic_settings,
)

DAY_MS = 86_400_000


def test_each_role_gets_the_settings_its_use_needs() -> None:
    plain = TopicSettings()
    assert plain.configs("refs") == {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
    assert plain.configs("results") == {"cleanup.policy": "delete"}
    assert plain.configs("dlq") == {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)}
    assert REFS_RETENTION_MS < DLQ_RETENTION_MS
    assert plain.configs(None) == {}  # a topic without a role gets the broker's defaults


def test_the_replication_factor_defaults_to_the_brokers() -> None:
    assert TopicSettings().replicas == -1
    assert topic_settings((), 3).replicas == 3
    with pytest.raises(ConfigError, match="--replication-factor"):
        topic_settings((), 0)


def test_a_role_item_overrides_only_that_role() -> None:
    layout = topic_settings(["refs:retention.ms=1000", "dlq:max.message.bytes=2048"], None)
    assert layout.configs("refs") == {"cleanup.policy": "delete", "retention.ms": "1000"}
    assert layout.configs("results") == {"cleanup.policy": "delete"}
    assert layout.configs("dlq")["max.message.bytes"] == "2048"
    assert layout.configs("dlq")["retention.ms"] == str(DLQ_RETENTION_MS)


def test_an_item_without_a_role_applies_to_every_role_and_later_items_win() -> None:
    layout = topic_settings(["min.insync.replicas=2", "results:min.insync.replicas=1"], 3)
    assert [layout.configs(r)["min.insync.replicas"] for r in ROLES] == ["2", "1", "2", "2", "2"]
    assert layout.configs(None) == {"min.insync.replicas": "2"}
    assert parse_topic_configs([" refs : retention.ms = 5 "]) == {"refs": {"retention.ms": "5"}}


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("retention.ms", "expected [ROLE:]key=value"),
        ("input:retention.ms=1", "unknown role 'input'; roles: refs, results, dlq"),
        ("refs:retention.msec=1", "did you mean 'retention.ms'"),
        ("refs:bootstrap.servers=x", "is not a Kafka topic config"),
        ("refs:retention.ms=", "the value is empty"),
    ],
)
def test_a_bad_item_is_refused_naming_the_flag(item: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_topic_configs([item])
    assert str(info.value).startswith(f"--topic-config {item!r}: ")
    assert says in str(info.value)


def test_the_create_request_carries_partitions_replicas_and_configs() -> None:
    layout = topic_settings(["cleanup.policy=compact,delete"], 3)
    assert new_topic_request(6, layout, "results") == {
        "num_partitions": 6,
        "replication_factor": 3,
        "configs": {"cleanup.policy": "compact,delete"},
    }
    assert new_topic_request(1, TopicSettings(), None)["replication_factor"] == -1


def test_a_worker_config_maps_its_topics_to_roles(tmp_path) -> None:
    config = WorkerConfig(
        bootstrap="b",
        out_dir=str(tmp_path),
        roots=(str(tmp_path),),
        refs_topic="in",
        results_topic="out",
        dlq_topic="bad",
        topic_configs=("dlq:retention.ms=60000",),
        replication_factor=2,
    ).validate()
    assert config.topic_roles() == {
        "in": "refs",
        "out": "results",
        "bad": "dlq",
        "imgstream.attempts": "attempts",
        "imgstream.state": "state",
    }
    assert config.topic_settings.configs("attempts")["cleanup.policy"] == "compact"
    assert config.topic_settings.configs("dlq")["retention.ms"] == "60000"
    assert config.topic_settings.replicas == 2
