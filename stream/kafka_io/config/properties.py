"""Java-style client properties files, JAAS lines, and secrets that do not print.

Kafka users keep client settings in a ``.properties`` file
(``security.protocol=SASL_SSL``, ``sasl.password=...``). :func:`parse_properties`
reads that syntax as ``java.util.Properties.load`` does (``=``, ``:`` or
whitespace between key and value; ``#``/``!`` comments; a trailing ``\\``
continues a line; ``\\t``, ``\\n``, ``\\uXXXX`` escapes); :func:`parse_jaas`
reads the username and password out of a ``sasl.jaas.config`` value.

:class:`Secret` is a ``str`` for every library that uses it (``.encode()``,
joins, comparisons) but shows ``***`` wherever it is printed: ``repr()``
(so a logged dict of client settings is safe), ``str()``, ``%s`` and
f-strings.

Pure: no ``kafka`` import, no file access (the caller reads the text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MASK = "***"


class Secret(str):
    """A string that prints as ``***`` (passwords, key passphrases)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def reveal(self) -> str:
        """The value itself, as a plain ``str`` (for redaction filters)."""
        return str.__str__(self)


@dataclass(frozen=True)
class Line:
    """One property: its key, value and the line it starts on (for error messages)."""

    number: int
    key: str
    value: str


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


class PropertiesSyntaxError(ValueError):
    """A line the properties syntax cannot read (a bad ``\\u`` escape)."""

    def __init__(self, number: int, message: str) -> None:
        super().__init__(f"line {number}: {message}")
        self.number = number


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first physical line number, joined text) with comments and blanks dropped."""
    out: list[tuple[int, str]] = []
    pending: str | None = None
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip(" \t\f")
        if pending is None:
            if not line or line[0] in "#!":
                continue
            start, pending = number, ""
        # an odd number of trailing backslashes continues the line
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            pending += line[:-1]
            continue
        out.append((start, pending + line))
        pending = None
    if pending is not None:
        out.append((start, pending))
    return out


def _unescape(text: str, number: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\" or i + 1 == len(text):
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2 : i + 6]
            if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                raise PropertiesSyntaxError(number, f"bad unicode escape '\\u{digits}'")
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _split(line: str) -> tuple[str, str]:
    """Key and raw value: the key ends at the first unescaped ``=``, ``:`` or whitespace."""
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "=: \t\f":
            break
        i += 1
    key, rest = line[:i], line[i:]
    rest = rest.lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return key, rest


def parse_properties(text: str) -> list[Line]:
    """Every property of a ``.properties`` text, in file order (a repeated key repeats)."""
    lines = []
    for number, logical in _logical_lines(text):
        key, value = _split(logical)
        lines.append(Line(number, _unescape(key, number), _unescape(value, number)))
    return lines


#: ``name="value"`` (or ``name=value``) options of a JAAS login module line.
_JAAS_OPTION = re.compile(r'\s*([A-Za-z_][\w.-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s";]+))')
_JAAS_HEAD = re.compile(r"\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\b")


def parse_jaas(value: str) -> tuple[str, dict[str, str]]:
    """The login module class and its options of one ``sasl.jaas.config`` entry.

    ``org.apache.kafka.common.security.scram.ScramLoginModule required
    username="alice" password="s3cret";`` -> ``("...ScramLoginModule",
    {"username": "alice", "password": "s3cret"})``. Raises ValueError on
    anything else (several modules, missing ``;``).
    """
    head = _JAAS_HEAD.match(value)
    if head is None:
        raise ValueError("expected '<LoginModule class> required name=\"value\" ...;'")
    rest = value[head.end() :]
    options: dict[str, str] = {}
    while True:
        m = _JAAS_OPTION.match(rest)
        if m is None:
            break
        quoted, bare = m.group(2), m.group(3)
        options[m.group(1)] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare or ""
        rest = rest[m.end() :]
    if rest.strip() != ";":
        raise ValueError("expected one login module ending with ';'")
    return head.group(1), options
