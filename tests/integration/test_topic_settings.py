"""The topics imgstream creates get their role's settings on Apache Kafka (and still work on Tansu).

Runs on a one-node Apache Kafka of its own (``compose/kafka/kraft.py``,
module-scoped); the settings are read back with DescribeConfigs. Skipped,
with the reason, where Java or Maven is missing (a failure under
``IMGSTREAM_REQUIRE_KAFKA=1`` or in CI).
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from imgstream.broker import EmbeddedBroker
from imgstream.kafka_io import ensure_topics
from imgstream.topics import DLQ_RETENTION_MS, REFS_RETENTION_MS, TopicSettings
from tests.fixtures.processes import Background

KRAFT = Path(__file__).resolve().parents[2] / "compose" / "kafka" / "kraft.py"


def load_kraft() -> ModuleType:
    """``compose/kafka/kraft.py``, imported by path (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("imgstream_test_kraft", KRAFT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_kafka(kraft: ModuleType) -> None:
    """Skip (or fail, where Kafka is required) when the cluster cannot run here."""
    ok, reason = kraft.available()
    if ok:
        return
    if os.environ.get("IMGSTREAM_REQUIRE_KAFKA") == "1" or os.environ.get("CI") == "true":
        pytest.fail(f"Apache Kafka is required here, but: {reason}")
    pytest.skip(f"Apache Kafka cannot run here: {reason}")


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A one-node Apache Kafka for this module (its start-up time is printed)."""
    kraft = load_kraft()
    require_kafka(kraft)
    began = time.monotonic()
    cluster = kraft.KafkaCluster(
        nodes=1, heap_mb=256, workdir=tmp_path_factory.mktemp("topic-settings") / "kafka"
    )
    cluster.start(timeout_s=120)
    print(f"Kafka (1 node) ready in {time.monotonic() - began:.1f}s")
    try:
        yield cluster
    finally:
        cluster.close()


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


def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {f"refs-{tag}": "refs", f"results-{tag}": "results", f"dlq-{tag}": "dlq"}


def test_created_topics_get_the_settings_of_their_role(kafka: Any) -> None:
    roles = names()
    ensure_topics(kafka.bootstrap, dict.fromkeys(roles, 2), roles=roles)
    got = {role: described(kafka.bootstrap, topic) for topic, role in roles.items()}
    assert got["refs"]["retention.ms"] == str(REFS_RETENTION_MS)
    assert got["dlq"]["retention.ms"] == str(DLQ_RETENTION_MS)
    assert {c["cleanup.policy"] for c in got.values()} == {"delete"}
    # what imgstream did not set is the broker's default (7 days for results)
    assert got["results"]["retention.ms"] == str(7 * 86_400_000)


def test_the_user_overrides_a_role_and_existing_topics_are_left_alone(kafka: Any) -> None:
    roles = names()
    refs, results, dlq = roles
    ensure_topics(kafka.bootstrap, {dlq: 1})
    before = described(kafka.bootstrap, dlq)
    layout = TopicSettings(1, {"refs": {"retention.ms": "3600000", "segment.bytes": "1048576"}})
    ensure_topics(kafka.bootstrap, dict.fromkeys(roles, 1), roles=roles, layout=layout)
    assert described(kafka.bootstrap, refs)["retention.ms"] == "3600000"
    assert described(kafka.bootstrap, refs)["segment.bytes"] == "1048576"
    assert described(kafka.bootstrap, results)["segment.bytes"] != "1048576"
    # made before without a role: ensure_topics never alters it
    assert described(kafka.bootstrap, dlq) == before
    assert before["retention.ms"] != str(DLQ_RETENTION_MS)


def test_commands_take_topic_configs_from_flags_and_the_environment(
    kafka: Any,
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
        kafka.bootstrap,
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
    got = {role: described(kafka.bootstrap, topic) for topic, role in roles.items()}
    assert got["results"]["retention.ms"] == "86400000"
    assert got["refs"]["retention.ms"] == str(REFS_RETENTION_MS)
    assert {c["max.message.bytes"] for c in got.values()} == {"2000000"}
    # produce creates a missing refs topic the same way
    other = f"refs-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(
        "IMGSTREAM_TOPIC_CONFIG", "refs:retention.ms=7200000 refs:min.insync.replicas=1"
    )
    produce = background(
        "produce", *map(str, images), "--bootstrap", kafka.bootstrap, "--topic", other
    )
    assert produce.wait(120) == 0, produce.output()
    got_refs = described(kafka.bootstrap, other)
    assert (got_refs["retention.ms"], got_refs["min.insync.replicas"]) == ("7200000", "1")


def test_the_embedded_broker_takes_the_same_create_request(broker: EmbeddedBroker) -> None:
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
