"""The one table of Kafka client settings, and the one place clients are configured.

Every consumer, producer and admin client imgstream creates gets its settings
from :func:`client_config`: :data:`CLIENT_DEFAULTS` (kafka-python names, as in
its ``DEFAULT_CONFIG``), then the user's client properties, then what the call
itself needs for correctness (group id, manual commits). Keys a client class
does not know are dropped for it, so one flat table serves all three.

The user's properties come from a Java-style client properties file
(``--kafka-config``, :func:`load_client_settings`): :data:`PROPERTIES` maps
each accepted Kafka name to its kafka-python name and checks its value.
Passwords become :class:`~imgstream.kafka_io.config.properties.Secret` values, which
print as ``***``.

:func:`broker_errors` turns the client library's exceptions into
:class:`~imgstream.errors.BrokerError` naming the address and the cause
(:mod:`~imgstream.kafka_io.diagnosis`): an unreachable broker, a refused
password, a TLS handshake failure or a missing ACL is one line and exit code
3, never a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaError

from imgstream.config import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_MAX_POLL_INTERVAL_MS, WorkerConfig
from imgstream.errors import BrokerError, ConfigError
from imgstream.kafka_io.config.checks import (
    Check,
    boolean,
    check_combination,
    choice,
    compression,
    hostname_check,
    integer,
    nonempty,
    pem_only,
    readable_file,
    secret,
)
from imgstream.kafka_io.config.properties import (
    PropertiesSyntaxError,
    Secret,
    parse_jaas,
    parse_properties,
)
from imgstream.kafka_io.diagnosis import describe_error

#: Defaults for every client, by kafka-python's names. Tuned for the embedded
#: broker (a group join otherwise takes ~20 s) and right for Apache Kafka too.
CLIENT_DEFAULTS: dict[str, Any] = {
    # consumers
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "session_timeout_ms": 6000,
    # Members learn of a rebalance at their next heartbeat. 250 ms would shorten a
    # join on Kafka (0.34 -> 0.20 s), but the embedded broker then refuses most
    # commits made on revocation (tests/integration/test_rebalance.py).
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": DEFAULT_MAX_POLL_INTERVAL_MS,
    "fetch_max_wait_ms": 20,
    "max_poll_records": 500,
    # results may be written in transactions (--exactly-once): never read aborted ones
    "isolation_level": "read_committed",
    # producers: idempotent, acknowledged by every in-sync replica
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    # retried until delivery.timeout.ms, as Java's clients do: a leader that is
    # SIGKILLed is replaced only once the controller fences it (seconds)
    "retries": 2**31 - 1,
    "delivery_timeout_ms": 30000,
    # all: a broker that goes away is retried quickly, not after seconds
    "reconnect_backoff_ms": 50,
    "reconnect_backoff_max_ms": 1000,
}

#: Per client kind, defaults that differ from the shared ones (same key, other meaning).
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "producer": {"request_timeout_ms": 10000},
    "admin": {"request_timeout_ms": 10000},
    "consumer": {},
}


@dataclass(frozen=True)
class Property:
    """One accepted client property: its kafka-python name and its value check."""

    #: kafka-python's name; "" for the few handled by :func:`load_client_settings` itself.
    target: str
    check: Check


#: Kafka (Java and librdkafka) client property names -> kafka-python settings.
PROPERTIES: dict[str, Property] = {
    "bootstrap.servers": Property("", nonempty),  # stands in for --bootstrap
    "client.id": Property("client_id", nonempty),
    # security
    "security.protocol": Property(
        "security_protocol", choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
    ),
    "sasl.mechanism": Property(
        "sasl_mechanism", choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")
    ),
    "sasl.mechanisms": Property(  # librdkafka's name
        "sasl_mechanism", choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI")
    ),
    "sasl.username": Property("sasl_plain_username", nonempty),
    "sasl.password": Property("sasl_plain_password", secret),
    "sasl.jaas.config": Property("", secret),  # username/password of one module
    "sasl.kerberos.service.name": Property("sasl_kerberos_service_name", nonempty),
    "ssl.ca.location": Property("ssl_cafile", readable_file),
    "ssl.truststore.location": Property("ssl_cafile", readable_file),
    "ssl.truststore.type": Property("", pem_only),
    "ssl.certificate.location": Property("ssl_certfile", readable_file),
    "ssl.keystore.location": Property("ssl_certfile", readable_file),  # PEM: certificate and key
    "ssl.keystore.type": Property("", pem_only),
    "ssl.key.location": Property("ssl_keyfile", readable_file),
    "ssl.key.password": Property("ssl_password", secret),
    "ssl.crl.location": Property("ssl_crlfile", readable_file),
    "ssl.endpoint.identification.algorithm": Property("ssl_check_hostname", hostname_check),
    # connections
    "request.timeout.ms": Property("request_timeout_ms", integer(1)),
    "metadata.max.age.ms": Property("metadata_max_age_ms", integer(0)),
    "retry.backoff.ms": Property("retry_backoff_ms", integer(0)),
    "reconnect.backoff.ms": Property("reconnect_backoff_ms", integer(0)),
    "reconnect.backoff.max.ms": Property("reconnect_backoff_max_ms", integer(0)),
    "connections.max.idle.ms": Property("connections_max_idle_ms", integer(1)),
    "receive.buffer.bytes": Property("receive_buffer_bytes", integer(1)),
    "send.buffer.bytes": Property("send_buffer_bytes", integer(1)),
    "max.in.flight.requests.per.connection": Property(
        "max_in_flight_requests_per_connection",
        integer(1, 5),  # 5: idempotence's limit
    ),
    "client.dns.lookup": Property(
        "client_dns_lookup", choice("use_all_dns_ips", "resolve_canonical_bootstrap_servers_only")
    ),
    # consumers
    "session.timeout.ms": Property("session_timeout_ms", integer(1)),
    "heartbeat.interval.ms": Property("heartbeat_interval_ms", integer(1)),
    "max.poll.records": Property("max_poll_records", integer(1)),
    "fetch.min.bytes": Property("fetch_min_bytes", integer(1)),
    "fetch.max.bytes": Property("fetch_max_bytes", integer(1)),
    "fetch.max.wait.ms": Property("fetch_max_wait_ms", integer(0)),
    "max.partition.fetch.bytes": Property("max_partition_fetch_bytes", integer(1)),
    "check.crcs": Property("check_crcs", boolean),
    "client.rack": Property("client_rack", nonempty),
    "isolation.level": Property("isolation_level", choice("read_uncommitted", "read_committed")),
    "allow.auto.create.topics": Property("allow_auto_create_topics", boolean),
    # producers
    "linger.ms": Property("linger_ms", integer(0)),
    "batch.size": Property("batch_size", integer(1)),
    "compression.type": Property("compression_type", compression),
    "max.request.size": Property("max_request_size", integer(1)),
    "delivery.timeout.ms": Property("delivery_timeout_ms", integer(1)),
    "retries": Property("retries", integer(0)),
    "max.block.ms": Property("max_block_ms", integer(0)),
    "transaction.timeout.ms": Property("transaction_timeout_ms", integer(1)),
}

#: Kafka names imgstream decides itself (or kafka-python cannot honour), with the reason.
REFUSED: dict[str, str] = {
    "group.id": "imgstream sets it: use --group",
    "max.poll.interval.ms": "use --max-poll-interval (the worker's revoke deadline follows it)",
    "enable.auto.commit": "imgstream commits only after outputs are stored",
    "auto.commit.interval.ms": "imgstream commits only after outputs are stored",
    "auto.offset.reset": "imgstream reads a new group from the earliest ref",
    "acks": "imgstream's idempotent producers need acks=all",
    "enable.idempotence": "imgstream's producers are always idempotent",
    "transactional.id": "use --exactly-once",
    "group.instance.id": "workers of one group would share it",
    "key.serializer": "imgstream writes bytes",
    "value.serializer": "imgstream writes bytes",
    "key.deserializer": "imgstream reads bytes",
    "value.deserializer": "imgstream reads bytes",
    "ssl.truststore.password": "only PEM trust stores are supported, and they take no password",
    "ssl.keystore.password": "only PEM key stores are supported: use ssl.key.password",
    "ssl.cipher.suites": "kafka-python 3 does not apply a cipher list",
    "enable.ssl.certificate.verification": "kafka-python always verifies the broker",
}

_JAAS_MODULES = {
    "org.apache.kafka.common.security.plain.PlainLoginModule": ("PLAIN",),
    "org.apache.kafka.common.security.scram.ScramLoginModule": ("SCRAM-SHA-256", "SCRAM-SHA-512"),
}


@dataclass(frozen=True)
class ClientSettings:
    """What the user decides about every client: how long to wait, extra properties."""

    #: Seconds to wait for the bootstrap servers to answer before BrokerError.
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    #: kafka-python settings (``security_protocol``, ...) applied over the defaults;
    #: passwords are :class:`Secret` values.
    properties: Mapping[str, Any] = field(default_factory=dict)
    #: ``bootstrap.servers`` of the properties file, if it named them.
    bootstrap: str | None = None
    #: The properties file these came from (named in error messages).
    source: str | None = None

    def secrets(self) -> list[str]:
        """The secret values (passwords), for log redaction."""
        return [v.reveal() for v in self.properties.values() if isinstance(v, Secret)]


def load_client_settings(
    path: str | None, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
) -> ClientSettings:
    """The settings of a client properties file (None: no file, no properties).

    Raises :class:`ConfigError` (exit 2) naming the file and the key for an
    unknown key, a bad value, a file that cannot be read or a combination
    kafka-python cannot use.
    """
    if path is None:
        return ClientSettings(connect_timeout_s)
    where = f"--kafka-config {path}"
    try:
        with open(path, encoding="utf-8") as f:
            lines = parse_properties(f.read())
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a UTF-8 text file") from None
    except PropertiesSyntaxError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    props: dict[str, Any] = {}
    given: dict[str, str] = {}  # kafka-python name -> the Kafka name that set it
    bootstrap = None
    jaas: Secret | None = None
    for line in lines:
        at = f"{where} line {line.number}: {line.key}"
        prop = PROPERTIES.get(line.key)
        if prop is None:
            raise ConfigError(f"{at}: {_unknown(line.key)}")
        try:
            value = prop.check(line.value)
        except ValueError as exc:
            raise ConfigError(f"{at}: {exc}") from None
        if line.key == "bootstrap.servers":
            bootstrap = ",".join(s.strip() for s in value.split(",") if s.strip())
        elif line.key == "sasl.jaas.config":
            jaas = value
        elif prop.target:
            props[prop.target] = value
            given[prop.target] = line.key
    if jaas is not None:
        _apply_jaas(jaas, props, given, where)
    check_combination(props, given, where)
    return ClientSettings(connect_timeout_s, props, bootstrap, path)


def _unknown(key: str) -> str:
    if key in REFUSED:
        return f"not accepted: {REFUSED[key]}"
    close = difflib.get_close_matches(key, PROPERTIES, n=1)
    if close:
        return f"unknown property (did you mean {close[0]!r}?)"
    return f"unknown property; accepted: {', '.join(sorted(PROPERTIES))}"


def _apply_jaas(jaas: Secret, props: dict[str, Any], given: dict[str, str], where: str) -> None:
    at = f"{where}: sasl.jaas.config"
    try:
        module, options = parse_jaas(jaas.reveal())
    except ValueError as exc:
        raise ConfigError(f"{at}: {exc}") from None
    mechanisms = _JAAS_MODULES.get(module)
    if mechanisms is None:
        known = ", ".join(m.rsplit(".", 1)[1] for m in _JAAS_MODULES)
        raise ConfigError(f"{at}: login module {module} is not supported (only {known})")
    if "sasl_plain_username" in props or "sasl_plain_password" in props:
        raise ConfigError(f"{at}: set either sasl.jaas.config or sasl.username/sasl.password")
    if "username" not in options or "password" not in options:
        raise ConfigError(f'{at}: needs username="..." and password="..."')
    mechanism = props.get("sasl_mechanism")
    if mechanism is not None and mechanism not in mechanisms:
        name = module.rsplit(".", 1)[1]
        raise ConfigError(f"{at}: {name} does not do sasl.mechanism={mechanism}")
    props["sasl_plain_username"] = options["username"]
    props["sasl_plain_password"] = Secret(options["password"])
    given["sasl_plain_username"] = given["sasl_plain_password"] = "sasl.jaas.config"


def worker_settings(config: WorkerConfig) -> ClientSettings:
    """The client settings of a worker: its connect timeout and its ``--kafka-config``."""
    return load_client_settings(config.kafka_config, config.connect_timeout_s)


def client_config(
    kind: str,
    known: Mapping[str, Any],
    bootstrap: str,
    settings: ClientSettings | None = None,
    tuned: Mapping[str, Any] | None = None,
    **fixed: Any,
) -> dict[str, Any]:
    """The keyword arguments of one client of ``kind`` (``consumer``, ``producer``, ``admin``).

    ``known`` is the client class's ``DEFAULT_CONFIG``: keys it lacks are
    dropped. ``tuned`` are this client's own defaults (a longer linger, a
    longer fetch wait): over the table's, under the user's properties.
    ``fixed`` are settings the caller depends on and always win, except
    ``client_id``: a ``client.id`` the user set (quotas, ACL audits) wins.
    """
    if settings is None:
        settings = ClientSettings()
    merged: dict[str, Any] = dict(CLIENT_DEFAULTS)
    merged.update(KIND_DEFAULTS[kind])
    merged.update(tuned or {})
    merged["bootstrap_timeout_ms"] = max(1, int(settings.connect_timeout_s * 1000))
    if kind == "producer":
        # metadata waits in send()/partitions_for() are bounded by the same timeout
        merged["max_block_ms"] = merged["bootstrap_timeout_ms"]
    merged.update(settings.properties)
    merged.update(fixed)
    if "client_id" in settings.properties:
        merged["client_id"] = settings.properties["client_id"]
    merged["bootstrap_servers"] = bootstrap
    return {k: v for k, v in merged.items() if k in known}


@contextmanager
def broker_errors(
    bootstrap: str, settings: ClientSettings | None = None, action: str = "access"
) -> Iterator[None]:
    """Turn kafka-python's errors inside the block into BrokerError naming ``bootstrap``.

    ``action`` is what the block does to topics (``read``, ``write``,
    ``create``): an authorization error says what was refused.
    """
    try:
        yield
    except KafkaError as exc:
        settings = settings or ClientSettings()
        raise BrokerError(
            describe_error(
                exc,
                bootstrap,
                settings.properties,
                settings.connect_timeout_s,
                action,
                settings.source,
            )
        ) from None


def as_broker_error(exc: BaseException) -> BrokerError | None:
    """The BrokerError for a client library exception that escaped, else None.

    The CLI edge uses it so that no kafka-python exception is ever a traceback.
    """
    if isinstance(exc, KafkaError):
        return BrokerError(describe_error(exc, None, {}, None))
    return None
