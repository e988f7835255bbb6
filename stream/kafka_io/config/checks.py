"""Checks of client property values, and of the values taken together.

Each check takes the text of one property and returns its kafka-python value,
or raises ValueError saying what is wrong (the caller names the file and the
key). :func:`check_combination` then refuses settings that only work
together (a password without a SASL protocol, a key without its certificate)
and loads the TLS files once, so a bad file is exit 2 at start-up rather than
a connection retried until the timeout.
"""

from __future__ import annotations

import importlib.util
import os
import ssl
from collections.abc import Callable
from typing import Any

from kafka.codec import has_gzip, has_lz4, has_snappy, has_zstd

from imgstream.errors import ConfigError
from imgstream.kafka_io.config.properties import Secret

Check = Callable[[str], Any]


def integer(low: int = 0, high: int | None = None) -> Check:
    """An integer within ``low``..``high`` (milliseconds, bytes, counts)."""

    def check(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {bound}, got {value}")
        return value

    return check


def boolean(text: str) -> bool:
    """``true`` or ``false``, any case."""
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"must be true or false, got {text!r}")
    return value == "true"


def choice(*allowed: str) -> Check:
    """One of ``allowed``, any case; returned as spelled in ``allowed``."""

    def check(text: str) -> str:
        value = text.strip()
        for a in allowed:
            if value.upper() == a.upper():
                return a
        raise ValueError(f"must be one of {', '.join(allowed)}, got {text!r}")

    return check


def nonempty(text: str) -> str:
    """Any text but blank, stripped."""
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def secret(text: str) -> Secret:
    """A password: kept as is (spaces count), printed as ``***``."""
    if not text:
        raise ValueError("must not be empty")
    return Secret(text)


def readable_file(text: str) -> str:
    """A file this process can read, as an absolute path."""
    path = os.path.abspath(os.path.expanduser(text.strip()))
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {text.strip()}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"cannot read {text.strip()}")
    return path


def pem_only(text: str) -> str:
    """A store type: kafka-python reads PEM files only."""
    if text.strip().upper() != "PEM":
        raise ValueError(f"only PEM is supported (kafka-python reads no JKS/PKCS12), got {text!r}")
    return "PEM"


def hostname_check(text: str) -> bool:
    """``ssl.endpoint.identification.algorithm``: ``https`` checks the host name, empty or
    ``none`` does not."""
    value = text.strip().lower()
    if value not in ("", "https", "none"):
        raise ValueError(f"must be https, none or empty, got {text!r}")
    return value == "https"


_CODECS = {"gzip": has_gzip, "snappy": has_snappy, "lz4": has_lz4, "zstd": has_zstd}


def compression(text: str) -> str | None:
    """A codec kafka-python can use here (``none``: no compression)."""
    value: str = choice("none", *_CODECS)(text)
    if value == "none":
        return None
    if not _CODECS[value]():
        raise ValueError(f"{value} needs its Python codec package installed")
    return value


_SASL_KEYS = ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password")
_SSL_KEYS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_crlfile")
_CREDENTIALS = (("sasl_plain_username", "sasl.username"), ("sasl_plain_password", "sasl.password"))


def check_combination(props: dict[str, Any], given: dict[str, str], where: str) -> None:
    """Settings that only work together: the protocol decides which others may be set."""
    protocol = props.get("security_protocol", "PLAINTEXT")
    sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
    for keys, needed, wanted in ((_SASL_KEYS, sasl, "SASL"), (_SSL_KEYS, tls, "SSL")):
        stray = [given[k] for k in keys if k in props]
        if stray and not needed:
            raise ConfigError(
                f"{where}: {stray[0]} needs a {wanted} security.protocol, but it is {protocol}"
            )
    if sasl:
        mechanism = props.get("sasl_mechanism")
        if mechanism is None:
            raise ConfigError(
                f"{where}: sasl.mechanism is required with security.protocol={protocol}"
            )
        if mechanism == "GSSAPI":
            if importlib.util.find_spec("gssapi") is None:
                raise ConfigError(f"{where}: sasl.mechanism=GSSAPI needs the 'gssapi' package")
        else:
            for key, name in _CREDENTIALS:
                if key not in props:
                    raise ConfigError(f"{where}: sasl.mechanism={mechanism} needs {name}")
            user = props["sasl_plain_username"]
            if mechanism.startswith("SCRAM") and ("," in user or "=" in user):
                raise ConfigError(
                    f"{where}: {given['sasl_plain_username']}: kafka-python's SCRAM does not "
                    "escape ',' or '=' in a user name"
                )
    if tls:
        _check_tls_files(props, given, where)


def _check_tls_files(props: dict[str, Any], given: dict[str, str], where: str) -> None:
    """Load the CA, certificate and key once, so a bad file is exit 2 now, not a retry loop."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if "ssl_cafile" in props:
        try:
            ctx.load_verify_locations(props["ssl_cafile"])
        except (ssl.SSLError, ValueError):
            raise ConfigError(
                f"{where}: {given['ssl_cafile']}: no PEM certificate in {props['ssl_cafile']}"
            ) from None
    if "ssl_keyfile" in props and "ssl_certfile" not in props:
        raise ConfigError(f"{where}: ssl.key.location needs ssl.certificate.location")
    if "ssl_password" in props and "ssl_certfile" not in props:
        raise ConfigError(f"{where}: ssl.key.password needs a client certificate and key")
    if "ssl_certfile" in props:
        try:
            ctx.load_cert_chain(
                props["ssl_certfile"], props.get("ssl_keyfile"), props.get("ssl_password")
            )
        except (ssl.SSLError, ValueError, OSError):
            key = given.get("ssl_keyfile", given["ssl_certfile"])
            raise ConfigError(
                f"{where}: {key}: cannot load the client certificate and key "
                "(not PEM, not a matching pair, or a wrong ssl.key.password)"
            ) from None
