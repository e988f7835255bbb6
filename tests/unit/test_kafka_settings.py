"""Every Kafka client is configured from one table; client errors become BrokerError."""

from __future__ import annotations

import dataclasses

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from imgstream.errors import BrokerError
from imgstream.kafka_io import (
    CLIENT_DEFAULTS,
    ClientSettings,
    Secret,
    as_broker_error,
    broker_errors,
    client_config,
)
from imgstream.kafka_io.diagnosis import describe_error, probe_tls

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


# -- security errors: one line naming the cause ---------------------------------------

SECURE = ClientSettings(
    5.0,
    {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": Secret("hunter2"),
    },
    source="/etc/imgstream/client.properties",
)


def _said(exc: Exception, action: str = "access", settings: ClientSettings = SECURE) -> str:
    with pytest.raises(BrokerError) as info, broker_errors("h:1", settings, action=action):
        raise exc
    message = str(info.value)
    assert "\n" not in message and "hunter2" not in message and info.value.exit_code == 3
    return message


def test_a_refused_password_names_the_user_the_address_and_the_mechanism() -> None:
    exc = SaslAuthenticationFailedError("Authentication failed: invalid credentials")
    assert _said(exc) == "authentication failed for user 'alice' at h:1 (SASL SCRAM-SHA-512)"


def test_a_missing_acl_names_what_was_refused_and_to_whom() -> None:
    said = _said(TopicAuthorizationFailedError({"imgstream.refs"}), action="read")
    assert said == "not authorized to read topic 'imgstream.refs' as user 'alice' at h:1"
    assert "topic 'a', 'b'" in _said(TopicAuthorizationFailedError({"b", "a"}))
    said = _said(GroupAuthorizationFailedError("imgstream"))
    assert said == "not authorized to use consumer group 'imgstream' as user 'alice' at h:1"
    # the admin client's sentence is not a topic name
    said = _said(TopicAuthorizationFailedError("Request 'CreateTopics' failed with response"))
    assert said.startswith("not authorized to access a topic")


def test_a_tls_client_that_times_out_gets_the_handshake_probed() -> None:
    tls = dataclasses.replace(SECURE, properties={**SECURE.properties, "security_protocol": "SSL"})
    asked: list[tuple[str, float]] = []

    def probe(bootstrap, props, timeout_s, source):
        asked.append((bootstrap, timeout_s))
        return "TLS handshake with h:1 failed: certificate verify failed: self-signed"

    with pytest.raises(BrokerError) as info:
        raise BrokerError(
            describe_error(KafkaTimeoutError("x"), "h:1", tls.properties, 5.0, probe=probe)
        )
    assert str(info.value).startswith("TLS handshake with h:1 failed: certificate verify")
    assert asked == [("h:1", 3.0)]  # bounded: the probe gets at most PROBE_TIMEOUT_S
    silent = describe_error(KafkaTimeoutError("x"), "h:1", {}, 5.0, probe=lambda *a: None)
    assert silent == "no broker answers at h:1 within 5s (--connect-timeout)"


def test_a_plaintext_client_is_never_probed() -> None:
    assert probe_tls("127.0.0.1:1", {"security_protocol": "SASL_PLAINTEXT"}, 1.0) is None


def test_consumers_read_committed_unless_the_properties_say_otherwise() -> None:
    # --exactly-once writes results in transactions: no reader may see aborted ones
    conf = client_config("consumer", KINDS["consumer"], "h:1", ClientSettings())
    assert conf["isolation_level"] == "read_committed"
    settings = ClientSettings(properties={"isolation_level": "read_uncommitted"})
    conf = client_config("consumer", KINDS["consumer"], "h:1", settings)
    assert conf["isolation_level"] == "read_uncommitted"
    assert "isolation_level" not in client_config("producer", KINDS["producer"], "h:1")
