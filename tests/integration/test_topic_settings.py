"""The topics imgstream creates get their role's settings on Apache Kafka (and still work on Tansu).

The settings are read back with DescribeConfigs from the session's Apache
Kafka (``tests/fixtures/cluster.py``); Tansu keeps no topic configs to read
back, so there the test only checks that it takes the same request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from imgstream.kafka_io import ensure_topics
from imgstream.schema.topics import DLQ_RETENTION_MS, REFS_RETENTION_MS, TopicSettings
from tests.fixtures.cluster import Broker
from tests.fixtures.processes import Background


def described(bootstrap: str, topic: str) -> dict[str, str]:
    """The topic's configs as the broker reports them (every key, defaults included)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        answer = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
    finally:
        admin.close()
    entries = answer["topic"][topic]
    return {key: str(entry["value"]) for key, entry in entries.items()}


KAFKA = pytest.mark.kafka_only("Tansu keeps no topic configs to describe")


def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {f"refs-{tag}": "refs", f"results-{tag}": "results", f"dlq-{tag}": "dlq"}


@KAFKA
def test_created_topics_get_the_settings_of_their_role(broker: Broker) -> None:
    roles = names()
    ensure_topics(broker.bootstrap, dict.fromkeys(roles, 2), roles=roles)
    got = {role: described(broker.bootstrap, topic) for topic, role in roles.items()}
    assert got["refs"]["retention.ms"] == str(REFS_RETENTION_MS)
    assert got["dlq"]["retention.ms"] == str(DLQ_RETENTION_MS)
    assert {c["cleanup.policy"] for c in got.values()} == {"delete"}
    # what imgstream did not set is the broker's default (7 days for results)
    assert got["results"]["retention.ms"] == str(7 * 86_400_000)


@KAFKA
def test_the_user_overrides_a_role_and_existing_topics_are_left_alone(broker: Broker) -> None:
    roles = names()
    refs, results, dlq = roles
    ensure_topics(broker.bootstrap, {dlq: 1})
    keys = ("retention.ms", "cleanup.policy", "segment.bytes")
    before = {k: described(broker.bootstrap, dlq)[k] for k in keys}
    layout = TopicSettings(1, {"refs": {"retention.ms": "3600000", "segment.bytes": "1048576"}})
    ensure_topics(broker.bootstrap, dict.fromkeys(roles, 1), roles=roles, layout=layout)
    assert described(broker.bootstrap, refs)["retention.ms"] == "3600000"
    assert described(broker.bootstrap, refs)["segment.bytes"] == "1048576"
    assert described(broker.bootstrap, results)["segment.bytes"] != "1048576"
    # made before without a role: ensure_topics never alters it
    assert {k: described(broker.bootstrap, dlq)[k] for k in keys} == before
    assert before["retention.ms"] != str(DLQ_RETENTION_MS)


@KAFKA
def test_commands_take_topic_configs_from_flags_and_the_environment(
    broker: Broker,
    background: Callable[..., Background],
    write_images: Callable[..., list[Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    roles = names()
    refs, results, dlq = roles
    images = write_images(tmp_path / "in", 3)
    worker = background(
        "work",
        "--bootstrap",
        broker.bootstrap,
        "--topic",
        refs,
        "--results-topic",
        results,
        "--dlq-topic",
        dlq,
        "--group",
        f"g-{refs}",
        "--out",
        str(tmp_path / "out"),
        "--root",
        str(tmp_path),
        "--threads",
        "1",
        "--replication-factor",
        "1",
        "--topic-config",
        "results:retention.ms=86400000",
        "--topic-config",
        "max.message.bytes=2000000",
        "--idle-exit",
        "3",
    )
    assert worker.wait(120) == 0, worker.output()
    got = {role: described(broker.bootstrap, topic) for topic, role in roles.items()}
    assert got["results"]["retention.ms"] == "86400000"
    assert got["refs"]["retention.ms"] == str(REFS_RETENTION_MS)
    assert {c["max.message.bytes"] for c in got.values()} == {"2000000"}
    # produce creates a missing refs topic the same way
    other = f"refs-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(
        "IMGSTREAM_TOPIC_CONFIG", "refs:retention.ms=7200000 refs:min.insync.replicas=1"
    )
    produce = background(
        "produce", *map(str, images), "--bootstrap", broker.bootstrap, "--topic", other
    )
    assert produce.wait(120) == 0, produce.output()
    got_refs = described(broker.bootstrap, other)
    assert (got_refs["retention.ms"], got_refs["min.insync.replicas"]) == ("7200000", "1")


def test_the_embedded_broker_takes_the_same_create_request(broker: Broker) -> None:
    """Tansu accepts the role configs and the broker-default replication factor."""
    roles = names()
    one = f"rf-one-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, dict.fromkeys(roles, 2), roles=roles)
    ensure_topics(broker.bootstrap, {one: 1}, layout=TopicSettings(1))
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        listed = set(admin.list_topics())
    finally:
        admin.close()
    assert set(roles) | {one} <= listed
