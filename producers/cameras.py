"""The cameras file of ``capture --cameras`` (TOML), and stream URLs with their secrets hidden.

A ``[defaults]`` table holds what cameras share; one ``[[camera]]`` table per
camera names it (``name`` is the frames' source) and gives its ``url`` and,
optionally, ``fps``, ``max_width`` and ``quality``::

    [defaults]
    fps = 2

    [[camera]]
    name = "gate"
    url = "rtsp://viewer:${GATE_PASSWORD}@10.0.0.5/stream1"
    fps = 5

``${VAR}`` in a string is replaced by the environment variable ``VAR`` (the
environment is passed in, so parsing stays pure), which keeps passwords out
of the file. Every URL leaves this module through :func:`redact_url` when it
is logged, printed or recorded.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import tomllib

from imgstream.errors import ConfigError

#: The keys a camera table (and the defaults table) may hold.
CAMERA_KEYS = ("name", "url", "fps", "max_width", "quality")
_DEFAULT_KEYS = ("fps", "max_width", "quality")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Query parameters whose values are secrets (``?password=...``, ``&token=...``).
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:password|passwd|pass|pwd|token|secret|key|auth|signature)=)[^&;#]*"
)


@dataclass(frozen=True)
class Camera:
    """One stream to capture: its name (the frames' source) and how to sample it."""

    name: str
    url: str
    fps: float = 5.0
    max_width: int | None = None
    quality: int = 90

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden, for logs and messages."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        # A dataclass repr would print the password in a traceback or a log.
        return f"Camera(name={self.name!r}, url={self.safe_url!r}, fps={self.fps})"


def redact_url(url: str) -> str:
    """``url`` with the password of its user info and secret query values as ``***``."""
    redacted = _SECRET_QUERY.sub(r"\1***", url)
    try:
        parts = urlsplit(redacted)
        password = parts.password
    except ValueError:  # not a URL we can take apart: hide everything between :// and @
        return re.sub(r"://[^/@]*@", "://***@", redacted)
    if not password:
        return redacted
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def secrets_of(url: str) -> list[str]:
    """The secret parts of a URL (its password, secret query values), to mask in logs."""
    found = [m[0][len(m[1]) :] for m in _SECRET_QUERY.finditer(url)]
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return [s for s in (password, *found) if s]


def expand(value: str, env: Mapping[str, str], where: str) -> str:
    """``value`` with each ``${VAR}`` replaced from ``env``; a missing one is a ConfigError."""

    def lookup(match: re.Match[str]) -> str:
        name = match[1]
        if name not in env:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return env[name]

    return _VAR.sub(lookup, value)


def _number(table: Mapping[str, Any], key: str, where: str) -> Any:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if key == "fps" and value <= 0:
        raise ConfigError(f"{where}: fps must be positive, got {value}")
    if key == "quality" and not (isinstance(value, int) and 1 <= value <= 100):
        raise ConfigError(f"{where}: quality must be an integer from 1 to 100, got {value}")
    if key == "max_width" and not (isinstance(value, int) and value >= 16):
        raise ConfigError(f"{where}: max_width must be an integer of at least 16, got {value}")
    return value


def _checked(table: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (valid: {', '.join(allowed)})")
    return {k: _number(table, k, where) if k in _DEFAULT_KEYS else v for k, v in table.items()}


def parse_cameras(text: str, env: Mapping[str, str], origin: str = "cameras file") -> list[Camera]:
    """The cameras of a TOML document; ConfigError (naming ``origin``) when it is not valid."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML ({exc})") from None
    unknown = sorted(set(doc) - {"defaults", "camera"})
    if unknown:
        raise ConfigError(f"{origin}: unknown table {unknown[0]!r} (valid: defaults, camera)")
    defaults = _checked(doc.get("defaults", {}), _DEFAULT_KEYS, f"{origin} [defaults]")
    tables = doc.get("camera", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{origin}: use [[camera]] (one table per camera), not [camera]")
    if not tables:
        raise ConfigError(f"{origin}: no [[camera]] table")
    cameras: list[Camera] = []
    for i, table in enumerate(tables, 1):
        where = f"{origin} camera #{i}"
        fields = {**defaults, **_checked(table, CAMERA_KEYS, where)}
        for key in ("name", "url"):
            if not isinstance(fields.get(key), str) or not fields[key]:
                raise ConfigError(f"{where}: {key} is required (a string)")
        name = expand(fields["name"], env, where)
        if not _NAME.match(name):
            raise ConfigError(
                f"{where}: name {name!r} must be letters, digits, '.', '_' or '-' (up to 64)"
            )
        if any(c.name == name for c in cameras):
            raise ConfigError(f"{origin}: two cameras are named {name!r}")
        fields.update(name=name, url=expand(fields["url"], env, f"{origin} camera {name!r}"))
        cameras.append(Camera(**fields))
    return cameras


def load_cameras(path: str, env: Mapping[str, str]) -> list[Camera]:
    """The cameras of the TOML file at ``path`` (``${VAR}`` taken from ``env``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"--cameras {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--cameras {path}: not UTF-8 text") from None
    return parse_cameras(text, env, origin=f"--cameras {path}")
