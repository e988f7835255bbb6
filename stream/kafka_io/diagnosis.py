"""What a client library error means, in one line that names its cause.

kafka-python reports a refused password as ``SaslAuthenticationFailedError``
and a missing ACL as ``TopicAuthorizationFailedError({'topic'})``; those are
worded here with the user, mechanism, topic or group they concern. A TLS
handshake that fails is *not* reported by kafka-python: it retries the
connection until the bootstrap timeout and says only that it could not
bootstrap. So when a TLS client's connection times out, :func:`probe_tls`
repeats the handshake once with the same settings and names what went wrong
(an unknown CA, a host name the certificate does not cover, a listener that
does not speak TLS); a SASL client connects once more to keep the reason its
authentication failed (:func:`probe_connection`).

Nothing here prints a password: messages use the user name only.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kafka.errors import (
    AuthorizationError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
    UnsupportedSaslMechanismError,
)

#: Seconds one diagnostic handshake may take, and how many bootstrap servers are tried.
PROBE_TIMEOUT_S = 3.0
PROBE_SERVERS = 3

#: (bootstrap, client settings, timeout s, properties file) -> the cause, or None.
Probe = Callable[[str, Mapping[str, Any], float, "str | None"], "str | None"]


def describe_error(
    exc: KafkaError,
    bootstrap: str | None,
    props: Mapping[str, Any],
    timeout_s: float | None,
    action: str = "access",
    source: str | None = None,
    probe: Probe | None = None,
) -> str:
    """One line for ``exc``: who was refused what where, or why no broker answered.

    ``props`` are the client's kafka-python settings (user, mechanism, TLS
    files); ``action`` is what the client did to topics (``read``, ``write``);
    ``source`` is the properties file they came from; ``probe`` replaces
    :func:`probe_connection` (tests).
    """
    where = f" at {bootstrap}" if bootstrap else ""
    user = props.get("sasl_plain_username")
    as_user = f" as user {user!r}" if user else ""
    mechanism = props.get("sasl_mechanism")
    if isinstance(exc, SaslAuthenticationFailedError):
        who = f" for user {user!r}" if user else ""
        return f"authentication failed{who}{where} (SASL {mechanism or '?'})"
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"the broker{where} does not accept SASL {mechanism}: {_text(exc)}"
    if isinstance(exc, TopicAuthorizationFailedError):
        topics = _names(exc.args)
        what = "topic " + ", ".join(repr(t) for t in topics) if topics else "a topic"
        return f"not authorized to {action} {what}{as_user}{where}"
    if isinstance(exc, GroupAuthorizationFailedError):
        groups = _names(exc.args)
        what = f"consumer group {groups[0]!r}" if groups else "the consumer group"
        return f"not authorized to use {what}{as_user}{where}"
    if isinstance(exc, TransactionalIdAuthorizationFailedError):
        return f"not authorized to use its transactional id{as_user}{where}"
    if isinstance(exc, ClusterAuthorizationFailedError):
        return f"not authorized for a cluster operation{as_user}{where}: {_text(exc)}"
    if isinstance(exc, AuthorizationError):
        return f"not authorized{as_user}{where}: {_text(exc)}"
    if isinstance(exc, (KafkaTimeoutError, KafkaConnectionError)) and timeout_s is not None:
        probe = probe_connection if probe is None else probe
        cause = probe(bootstrap or "", props, min(PROBE_TIMEOUT_S, timeout_s), source)
        if cause is not None:
            return cause
        # the reason would only repeat the address
        return f"no broker answers{where} within {timeout_s:g}s (--connect-timeout)"
    return f"broker{where} failed: {_text(exc)}"


def _text(exc: KafkaError) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if name in text:
        return text
    return f"{name}: {text}" if text else name


def _names(args: Iterable[Any]) -> list[str]:
    """Topic or group names carried by an error's arguments (a name, or a set of them).

    A sentence (the admin client's "Request ... failed") is not a name.
    """
    names: list[str] = []
    for arg in args:
        if isinstance(arg, str):
            if arg and not any(c.isspace() for c in arg):
                names.append(arg)
        elif isinstance(arg, (set, frozenset, list, tuple)):
            names += sorted(str(a) for a in arg)
    return names


def tls_context(props: Mapping[str, Any]) -> ssl.SSLContext:
    """The client TLS context kafka-python builds from the same settings."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = bool(props.get("ssl_check_hostname", True))
    if props.get("ssl_cafile"):
        ctx.load_verify_locations(props["ssl_cafile"])
    else:
        ctx.load_default_certs()
    if props.get("ssl_certfile"):
        ctx.load_cert_chain(
            props["ssl_certfile"], props.get("ssl_keyfile"), props.get("ssl_password")
        )
    if props.get("ssl_crlfile"):
        ctx.load_verify_locations(crl=props["ssl_crlfile"])  # type: ignore[call-arg]
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(",")[:PROBE_SERVERS]:
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            out.append((host.strip("[]"), int(port)))
    return out


def probe_tls(
    bootstrap: str, props: Mapping[str, Any], timeout_s: float, source: str | None = None
) -> str | None:
    """Why TLS connections to ``bootstrap`` fail, if they do; else None.

    The handshake is repeated with the client's own settings (a client that
    does not use TLS is not probed: a handshake that succeeds proves nothing
    where a proxy answers every port).
    """
    if not str(props.get("security_protocol", "PLAINTEXT")).endswith("SSL"):
        return None
    hint = f" (ssl.ca.location in {source})" if source else ""
    for host, port in _servers(bootstrap):
        try:
            _handshake(host, port, tls_context(props), timeout_s)
        except ssl.SSLCertVerificationError as exc:
            why = exc.verify_message or "unknown reason"
            return (
                f"TLS handshake with {host}:{port} failed: certificate verify failed: {why}{hint}"
            )
        except ssl.SSLError as exc:
            why = (exc.reason or str(exc)).lower().replace("_", " ")
            return f"TLS handshake with {host}:{port} failed: {why} (is it a TLS listener?)"
        except OSError:
            continue  # nothing listens (or it hangs): not a TLS problem
    return None


def probe_connection(
    bootstrap: str, props: Mapping[str, Any], timeout_s: float, source: str | None = None
) -> str | None:
    """Why a secured client cannot connect to ``bootstrap``, if it is TLS or SASL; else None.

    A TLS client's handshake is repeated (:func:`probe_tls`); a SASL client
    connects once more and keeps the error of its authentication, which
    kafka-python's bootstrap only logs before retrying until its timeout.
    """
    cause = probe_tls(bootstrap, props, timeout_s, source)
    if cause is not None:
        return cause
    if not str(props.get("security_protocol", "")).startswith("SASL_"):
        return None
    deadline = time.monotonic() + timeout_s
    for host, port in _servers(bootstrap):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        error = _connect_once(f"{host}:{port}", props, left)
        if isinstance(error, (SaslAuthenticationFailedError, UnsupportedSaslMechanismError)):
            return describe_error(error, f"{host}:{port}", props, None)
        if not isinstance(error, (KafkaConnectionError, KafkaTimeoutError, OSError)):
            break  # this one was reached and logged in (or failed otherwise): no SASL problem
    return None


def _connect_once(server: str, props: Mapping[str, Any], timeout_s: float) -> BaseException | None:
    """Open one connection with the client's settings; the error it failed with, if any."""
    from kafka.net.manager import KafkaConnectionManager
    from kafka.net.selector import NetworkSelector

    from imgstream.kafka_io.config import compat

    compat.apply()
    known = KafkaConnectionManager.DEFAULT_CONFIG
    config = {k: v for k, v in props.items() if k in known}
    config.update(bootstrap_servers=server, request_timeout_ms=int(timeout_s * 1000))
    net = NetworkSelector()
    manager = KafkaConnectionManager(net, **config)
    try:
        node = manager.cluster.bootstrap_brokers()[0].node_id
        conn = manager.get_connection(
            node, timeout_ms=timeout_s * 1000, pop_on_close=False, refresh_metadata_on_err=False
        )
        net.poll(timeout_ms=timeout_s * 1000, future=conn.init_future)
        future = conn.init_future
        return future.exception if future.is_done and future.failed() else None
    except Exception as exc:  # a probe must not fail the error report it serves
        return exc
    finally:
        manager.close()
        net.close()


def _handshake(host: str, port: int, ctx: ssl.SSLContext, timeout_s: float) -> None:
    with (
        socket.create_connection((host, port), timeout=timeout_s) as sock,
        ctx.wrap_socket(sock, server_hostname=host),
    ):
        pass  # wrap_socket does the handshake
