"""Every Kafka client is configured from one table; client errors become BrokerError."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError

from imgstream.errors import BrokerError
from imgstream.kafka_io import (
    CLIENT_DEFAULTS,
    ClientSettings,
    as_broker_error,
    broker_errors,
    client_config,
)

KINDS = {
    "consumer": KafkaConsumer.DEFAULT_CONFIG,
    "producer": KafkaProducer.DEFAULT_CONFIG,
    "admin": KafkaAdminClient.DEFAULT_CONFIG,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_client_gets_only_the_settings_it_knows(kind) -> None:
    known = KINDS[kind]
    conf = client_config(kind, known, "h:1", ClientSettings(connect_timeout_s=2.5))
    assert set(conf) <= set(known)  # kafka-python refuses unknown keys
    assert conf["bootstrap_servers"] == "h:1"
    assert conf["bootstrap_timeout_ms"] == 2500
    for key, value in CLIENT_DEFAULTS.items():
        if key in known and key != "request_timeout_ms":
            assert conf[key] == value, key


def test_the_table_covers_every_kind() -> None:
    used = set().union(*(set(CLIENT_DEFAULTS) & set(k) for k in KINDS.values()))
    assert used == set(CLIENT_DEFAULTS)  # no key is dead for every client


def test_user_properties_override_defaults_and_the_caller_overrides_both() -> None:
    settings = ClientSettings(
        properties={"session_timeout_ms": 10000, "security_protocol": "SSL", "group_id": "x"}
    )
    conf = client_config("consumer", KafkaConsumer.DEFAULT_CONFIG, "h:1", settings, group_id="mine")
    assert conf["session_timeout_ms"] == 10000
    assert conf["security_protocol"] == "SSL"
    assert conf["group_id"] == "mine"


def test_only_the_producer_bounds_its_metadata_waits_by_the_connect_timeout() -> None:
    settings = ClientSettings(connect_timeout_s=1.5)
    assert client_config("producer", KINDS["producer"], "h:1", settings)["max_block_ms"] == 1500
    assert "max_block_ms" not in client_config("consumer", KINDS["consumer"], "h:1", settings)


def test_an_unreachable_broker_is_one_line_naming_the_address_and_the_timeout() -> None:
    with pytest.raises(BrokerError) as info, broker_errors("10.0.0.1:9", ClientSettings(3.0)):
        raise KafkaTimeoutError("Unable to bootstrap from 10.0.0.1:9")
    message = str(info.value)
    assert "10.0.0.1:9" in message and "3s" in message and "--connect-timeout" in message
    assert "\n" not in message and info.value.exit_code == 3


def test_other_client_errors_name_the_broker_and_the_reason() -> None:
    failed = r"broker at h:1 failed: .*UnknownTopicOrPartition"
    with pytest.raises(BrokerError, match=failed), broker_errors("h:1"):
        raise UnknownTopicOrPartitionError("t")


def test_an_escaped_client_error_maps_to_broker_error_and_nothing_else_does() -> None:
    err = as_broker_error(KafkaTimeoutError("x"))
    assert isinstance(err, BrokerError) and err.exit_code == 3
    assert as_broker_error(ValueError("not kafka")) is None
