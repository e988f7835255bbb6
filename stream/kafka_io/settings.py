"""The one table of Kafka client defaults, and the one place clients are configured.

Every consumer, producer and admin client imgstream creates gets its settings
from :func:`client_config`: :data:`CLIENT_DEFAULTS` (kafka-python names, as in
its ``DEFAULT_CONFIG``), then the user's client properties, then what the call
itself needs for correctness (group id, manual commits). Keys a client class
does not know are dropped for it, so one flat table serves all three.

:func:`broker_errors` turns the client library's exceptions into
:class:`~imgstream.errors.BrokerError` naming the address, so an unreachable
broker is one line and exit code 3, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from imgstream.config import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_MAX_POLL_INTERVAL_MS
from imgstream.errors import BrokerError

#: Defaults for every client, by kafka-python's names. Tuned for the embedded
#: broker (a group join otherwise takes ~20 s) and right for Apache Kafka too.
CLIENT_DEFAULTS: dict[str, Any] = {
    # consumers
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": DEFAULT_MAX_POLL_INTERVAL_MS,
    "fetch_max_wait_ms": 20,
    "max_poll_records": 500,
    # producers: idempotent, acknowledged by every in-sync replica
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    "retries": 5,
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
class ClientSettings:
    """What the user decides about every client: how long to wait, extra properties."""

    #: Seconds to wait for the bootstrap servers to answer before BrokerError.
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    #: kafka-python settings (``security_protocol``, ...) applied over the defaults.
    properties: Mapping[str, Any] = field(default_factory=dict)


def client_config(
    kind: str,
    known: Mapping[str, Any],
    bootstrap: str,
    settings: ClientSettings | None = None,
    **fixed: Any,
) -> dict[str, Any]:
    """The keyword arguments of one client of ``kind`` (``consumer``, ``producer``, ``admin``).

    ``known`` is the client class's ``DEFAULT_CONFIG``: keys it lacks are
    dropped. ``fixed`` are settings the caller depends on and always win.
    """
    if settings is None:
        settings = ClientSettings()
    merged: dict[str, Any] = dict(CLIENT_DEFAULTS)
    merged.update(KIND_DEFAULTS[kind])
    merged["bootstrap_timeout_ms"] = max(1, int(settings.connect_timeout_s * 1000))
    if kind == "producer":
        # metadata waits in send()/partitions_for() are bounded by the same timeout
        merged["max_block_ms"] = merged["bootstrap_timeout_ms"]
    merged.update(settings.properties)
    merged.update(fixed)
    merged["bootstrap_servers"] = bootstrap
    return {k: v for k, v in merged.items() if k in known}


@contextmanager
def broker_errors(bootstrap: str, settings: ClientSettings | None = None) -> Iterator[None]:
    """Turn kafka-python's errors inside the block into BrokerError naming ``bootstrap``."""
    try:
        yield
    except KafkaError as exc:
        timeout = (settings or ClientSettings()).connect_timeout_s
        raise _broker_error(exc, bootstrap, timeout) from None


def as_broker_error(exc: BaseException) -> BrokerError | None:
    """The BrokerError for a client library exception that escaped, else None.

    The CLI edge uses it so that no kafka-python exception is ever a traceback.
    """
    if isinstance(exc, KafkaError):
        return _broker_error(exc, None, None)
    return None


def _broker_error(exc: KafkaError, bootstrap: str | None, timeout_s: float | None) -> BrokerError:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    reason = text if text.startswith(name) else f"{name}: {text}" if text else name
    where = f" at {bootstrap}" if bootstrap else ""
    if isinstance(exc, (KafkaTimeoutError, KafkaConnectionError)) and timeout_s is not None:
        # the reason would only repeat the address
        return BrokerError(f"no broker answers{where} within {timeout_s:g}s (--connect-timeout)")
    return BrokerError(f"broker{where} failed: {reason}")
