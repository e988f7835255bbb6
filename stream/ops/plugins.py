"""Plugins: installed distributions with entry points in the group ``imgstream.ops``.

Each entry point names a module (``name = package.module``); importing it is
all a plugin does, and the operations are the functions it defines marked
with ``@imgstream.op`` (an entry point may also name one marked function,
``name = package.module:function``). As pluggy's
``load_setuptools_entrypoints`` does, the entry points are found through
``importlib.metadata`` and each module is imported once per process (Python
keeps it); every operation records its distribution's name (normalised as pip
does) and version, which ``imgstream ops`` lists and the canonical spec and
its hash include.

A plugin that cannot be loaded stops the program at start-up with one line
(a :class:`~imgstream.errors.ConfigError`, exit 2), the way a bad spec does:
``plugin 'x' (dist 1.2): cannot import module m: ModuleNotFoundError: ...``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from imgstream.errors import ConfigError
from imgstream.ops.adapters import operation, operations_in
from imgstream.ops.decorator import mark_of
from imgstream.ops.registry import Operation, normalise

#: The entry-point group plugins register their modules in.
GROUP = "imgstream.ops"


@dataclass(frozen=True)
class Plugin:
    """One loaded entry point and the operations it brought."""

    name: str
    dist: str
    version: str
    target: str
    operations: tuple[Operation, ...]


def installed() -> list[EntryPoint]:
    """The ``imgstream.ops`` entry points of the installed distributions (on sys.path)."""
    return list(entry_points(group=GROUP))


def load_plugins(found: Iterable[EntryPoint] | None = None) -> list[Plugin]:
    """Import each entry point (default: the installed ones) and collect its operations."""
    plugins = []
    seen: set[str] = set()
    for ep in sorted(installed() if found is None else found, key=_order):
        if ep.value not in seen:  # two entry points naming one module bring it once
            seen.add(ep.value)
            plugins.append(_load(ep))
    return plugins


def _order(ep: EntryPoint) -> tuple[str, str]:
    return (normalise(ep.dist.name) if ep.dist is not None else "", ep.name)


def _load(ep: EntryPoint) -> Plugin:
    if ep.dist is None:
        raise ConfigError(f"plugin {ep.name!r} ({ep.value}): not from an installed distribution")
    dist, version = normalise(ep.dist.name), ep.dist.version
    label = f"plugin {ep.name!r} ({dist} {version})"
    try:
        target = ep.load()
    except Exception as exc:
        what = f"module {ep.module}" if not ep.attr else ep.value
        raise ConfigError(f"{label}: cannot import {what}: {_one_line(exc)}") from exc
    try:
        if isinstance(target, ModuleType):
            ops = operations_in(target, dist, version)
        elif mark_of(target) is not None:
            ops = [operation(target, dist, version)]
        else:
            raise TypeError(f"{ep.value} is neither a module nor an @imgstream.op function")
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{label}: {exc}") from exc
    return Plugin(ep.name, dist, version, ep.value, tuple(sorted(ops, key=lambda o: o.name)))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
