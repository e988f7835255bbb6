"""The cameras file of ``capture --cameras`` (TOML), and stream URLs with their secrets hidden.

A ``[defaults]`` table holds what cameras share; one ``[[camera]]`` table per
camera names it (``name`` is the frames' source) and gives its ``url`` and,
optionally, ``fps``, ``max_width``, ``quality`` and ``frames`` (``latest`` or
``all``: this camera's ``--frames``)::

    [defaults]
    fps = 2

    [[camera]]
    name = "gate"
    url = "rtsp://viewer:${GATE_PASSWORD}@10.0.0.5/stream1"
    fps = 5
    frames = "all"  # every sampled frame, whatever capture's --frames

``${VAR}`` in a string is replaced by the environment variable ``VAR`` (the
environment is passed in, so parsing stays pure), which keeps passwords out
of the file. In a URL, a value put into the user info is percent-encoded (as
is a query parameter's value), so a password holding ``/``, ``#``, ``?``,
``@``, ``:``, ``%`` or any non-ASCII character reaches the server as it is
(FFmpeg, and so OpenCV, percent-decodes user info for Basic and Digest
logins) instead of ending the host early. Those values are the camera's
secrets: :meth:`Camera.secrets` lists every form of them to mask in logs, and
every URL leaves this module through :func:`redact_url` when it is logged,
printed or recorded.

A running capture reads its cameras file again when it changes or on SIGHUP
(:class:`CamerasFile`); :func:`diff_cameras` says, by name, which cameras
were added, removed or changed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import tomllib

from imgstream.errors import ConfigError

#: The keys a camera table (and the defaults table) may hold.
CAMERA_KEYS = ("name", "url", "fps", "max_width", "quality", "frames")
_DEFAULT_KEYS = ("fps", "max_width", "quality", "frames")
_NUMBER_KEYS = ("fps", "max_width", "quality")
#: Which sampled frames a live camera keeps: the newest (``latest``) or every one.
FRAME_MODES = ("latest", "all")
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
    #: ``latest`` or ``all``; None: capture's ``--frames``.
    frames: str | None = None
    #: The values ``${VAR}`` put into the URL's user info or query (see
    #: :func:`expand_url`): secrets, masked wherever they appear. Not compared:
    #: they are inside ``url`` already.
    hidden: tuple[str, ...] = field(default=(), compare=False)

    @property
    def safe_url(self) -> str:
        """The URL with its password (and every substituted secret) hidden, for logs."""
        return redact_url(self.url, self.hidden)

    def secrets(self) -> list[str]:
        """Every secret of the camera in every form it may take in a log line.

        The substituted values as they are and percent-encoded, and the URL's
        own password and secret query values, encoded and decoded.
        """
        return _unique([*_forms(self.hidden), *secrets_of(self.url)])

    def __repr__(self) -> str:
        # A dataclass repr would print the password in a traceback or a log.
        return f"Camera(name={self.name!r}, url={self.safe_url!r}, fps={self.fps})"


def _unique(values: Iterable[str | None]) -> list[str]:
    """The non-empty values, each once, in order."""
    return list(dict.fromkeys(v for v in values if v))


def _forms(values: Iterable[str]) -> list[str]:
    """Each value as it is and percent-encoded (as it stands in a URL)."""
    return _unique(form for v in values for form in (v, quote(v, safe="")))


def _cut_short(url: str) -> tuple[str, str, str] | None:
    """A URL whose unencoded password ends its host early, as (head, password, tail).

    ``rtsp://viewer:s3/cr#t@10.0.0.5/s`` parses as host ``viewer:s3`` and the
    rest as path and fragment, so no parser sees a password in it. Such a URL
    is taken to hold user info up to its last ``@``; this may hide more than
    the password (never less), and the URL does not open anyway.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    start = url.find("://")
    if start < 0 or "@" in parts.netloc or ":" not in parts.netloc:
        return None
    start += 3
    at = url.rfind("@")
    if at < start + len(parts.netloc):
        return None
    colon = url.index(":", start)
    return url[: colon + 1], url[colon + 1 : at], url[at:]


def redact_url(url: str, secrets: Iterable[str] = ()) -> str:
    """``url`` with the password of its user info, secret query values and ``secrets``
    (as they are or percent-encoded) as ``***``."""
    redacted = _SECRET_QUERY.sub(r"\1***", url)
    cut = _cut_short(redacted)
    if cut is not None:
        redacted = f"{cut[0]}***{cut[2]}"
    else:
        try:
            parts = urlsplit(redacted)
            password = parts.password
        except ValueError:  # not a URL we can take apart: hide everything between :// and @
            redacted = re.sub(r"://[^/@]*@", "://***@", redacted)
        else:
            if password:
                host = parts.netloc.rpartition("@")[2]
                user = parts.username or ""
                redacted = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    # Longest first, so that a secret inside another is not left half shown.
    for secret in sorted(_forms(secrets), key=len, reverse=True):
        redacted = redacted.replace(secret, "***")
    return redacted


def secrets_of(url: str) -> list[str]:
    """The secret parts of a URL (its password, secret query values), to mask in logs:
    each as written in the URL and, where that differs, percent-decoded."""
    found = [m[0][len(m[1]) :] for m in _SECRET_QUERY.finditer(url)]
    cut = _cut_short(url)
    try:
        password = cut[1] if cut is not None else urlsplit(url).password
    except ValueError:
        password = None
    return _unique(form for s in (password, *found) if s for form in (s, unquote(s)))


def expand(value: str, env: Mapping[str, str], where: str) -> str:
    """``value`` with each ``${VAR}`` replaced from ``env``; a missing one is a ConfigError."""
    return _VAR.sub(lambda match: _lookup(match[1], env, where), value)


def _lookup(name: str, env: Mapping[str, str], where: str) -> str:
    if name not in env:
        raise ConfigError(f"{where}: environment variable {name} is not set")
    return env[name]


def _url_spans(template: str) -> tuple[range, range]:
    """Where a URL template's user info and query are, by its own characters.

    A ``${VAR}`` holds no ``/``, ``?``, ``#`` or ``@``, so the template's
    structure is the URL's, whatever the values.
    """
    start = template.find("://")
    if start < 0:
        return range(0), range(0)
    start += 3
    delimiter = re.compile(r"[/?#]").search(template, start)
    end = delimiter.start() if delimiter else len(template)
    at = template.rfind("@", start, end)
    userinfo = range(start, at) if at >= 0 else range(0)
    fragment = template.find("#", end)
    fragment = len(template) if fragment < 0 else fragment
    question = template.find("?", end, fragment)
    query = range(question + 1, fragment) if question >= 0 else range(0)
    return userinfo, query


def expand_url(template: str, env: Mapping[str, str], where: str) -> tuple[str, tuple[str, ...]]:
    """A URL with its ``${VAR}`` s replaced from ``env``, and the values that are secrets.

    A value put into the user info is percent-encoded whole, as is one that
    is a query parameter's value (``?token=${TOKEN}``): a ``/``, ``#``, ``?``,
    ``@``, ``:`` or ``%`` in a password would otherwise end the host early or
    change it. Values elsewhere (host, port, path) go in as they are. The
    values in the user info or the query are returned as secrets (as they
    were in the environment); text written in the template is left alone.
    """
    userinfo, query = _url_spans(template)
    secrets: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        value = _lookup(match[1], env, where)
        at = match.start()
        if at in userinfo:
            secrets.append(value)
            return quote(value, safe="")
        if at in query:
            secrets.append(value)
            return quote(value, safe="") if template[at - 1] == "=" else value
        return value

    url = _VAR.sub(substitute, template)
    return url, tuple(_unique(secrets))


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
    if "frames" in table and table["frames"] not in FRAME_MODES:
        raise ConfigError(
            f"{where}: frames must be one of {', '.join(FRAME_MODES)}, got {table['frames']!r}"
        )
    return {k: _number(table, k, where) if k in _NUMBER_KEYS else v for k, v in table.items()}


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
        url, hidden = expand_url(fields["url"], env, f"{origin} camera {name!r}")
        fields.update(name=name, url=url, hidden=hidden)
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


@dataclass(frozen=True)
class CameraChanges:
    """How a new cameras file differs from the running one, by camera name."""

    added: tuple[Camera, ...] = ()
    removed: tuple[Camera, ...] = ()
    #: The new settings of cameras whose URL, fps, max_width, quality or frames changed.
    changed: tuple[Camera, ...] = ()
    unchanged: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self, before: Sequence[Camera] = ()) -> str:
        """One line: what changes (with the changed settings' names, never values)."""
        old = {c.name: c for c in before}
        parts = []
        if self.added:
            parts.append("added " + ", ".join(c.name for c in self.added))
        if self.removed:
            parts.append("removed " + ", ".join(c.name for c in self.removed))
        if self.changed:
            shown = [
                f"{c.name} ({', '.join(changed_settings(old[c.name], c))})"
                if c.name in old
                else c.name
                for c in self.changed
            ]
            parts.append("restarted " + ", ".join(shown))
        parts.append(f"{len(self.unchanged)} unchanged")
        return "; ".join(parts)


def changed_settings(old: Camera, new: Camera) -> list[str]:
    """The names of the settings that differ between two versions of a camera."""
    differ = [f.name for f in fields(Camera) if getattr(old, f.name) != getattr(new, f.name)]
    return [name for name in differ if name != "hidden"]


def diff_cameras(running: Sequence[Camera], wanted: Sequence[Camera]) -> CameraChanges:
    """By name: cameras to start, to stop, to restart (new settings) and to leave alone."""
    old = {c.name: c for c in running}
    new = {c.name: c for c in wanted}
    return CameraChanges(
        added=tuple(c for c in wanted if c.name not in old),
        removed=tuple(c for c in running if c.name not in new),
        changed=tuple(c for c in wanted if c.name in old and old[c.name] != c),
        unchanged=tuple(c.name for c in wanted if old.get(c.name) == c),
    )


#: What tells a file changed without reading it: (mtime ns, size, inode), None: missing.
Signature = tuple[int, int, int] | None


def signature(path: str) -> Signature:
    """The file's modification time, size and inode; None when it cannot be seen."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class CamerasFile:
    """The cameras file of a running capture, read again when it has changed.

    :meth:`changed` is polled (every second or so): a change counts once the
    file has looked the same on two polls in a row, so a file caught halfway
    through being written (an editor truncates, then writes) is not read.
    Used by one thread.
    """

    def __init__(
        self,
        path: str,
        env: Mapping[str, str],
        stat: Callable[[str], Signature] = signature,
    ) -> None:
        self.path = path
        self.env = env
        self._stat = stat
        self._read: Signature = None  # the file as last read
        self._seen: Signature = None  # the file as the last poll saw it

    def load(self) -> list[Camera]:
        """Read and parse the file (ConfigError naming the problem when it is not valid)."""
        self._read = self._seen = self._stat(self.path)
        return load_cameras(self.path, self.env)

    def changed(self) -> bool:
        """Whether the file differs from the last read and has settled (one poll)."""
        now = self._stat(self.path)
        settled = now == self._seen
        self._seen = now
        return settled and now != self._read
