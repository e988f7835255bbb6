"""Options shared by the ``imgstream`` commands, generated from the settings table.

Worker settings come from :class:`~imgstream.config.WorkerConfig`'s field
metadata (flag, help, environment variable), so a flag is typed once.
Precedence is click's: flags > ``IMGSTREAM_*`` environment > defaults,
resolved once here; commands receive a built :class:`WorkerConfig`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from imgstream import config as cfg
from imgstream.errors import ConfigError
from imgstream.io.objstore import is_s3
from imgstream.io.stores import absolute

if TYPE_CHECKING:  # kafka is imported only by the commands that talk to a broker
    from imgstream.kafka_io import ClientSettings

F = Callable[..., Any]

PARTITION_CHOICES = click.Choice(["sequential", "random", "source", "size", "phash", "parent"])

_HINTS = typing.get_type_hints(cfg.WorkerConfig)
_FIELDS = {f.name: f for f in cfg.settings()}


if TYPE_CHECKING:  # click 8.5 makes ParamType generic; older ones cannot subscript it
    _ParamType = click.ParamType[str]
else:
    _ParamType = click.ParamType


class Location(_ParamType):
    """A directory or an ``s3://`` URI, kept as typed (local ones made absolute later).

    In the environment several are separated by ``:`` (``IMGSTREAM_ROOT=/data:s3://b/in``);
    the ``:`` of ``s3://`` does not separate.
    """

    name = "location"

    def split_envvar_value(self, rv: str) -> Sequence[str]:
        """``/a:s3://b/c`` -> ``/a``, ``s3://b/c``."""
        return [part for part in re.split(r":(?!//)", rv) if part]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The text itself; a local path that is an existing file is refused."""
        text = str(value)
        if not is_s3(text) and os.path.isfile(text):
            self.fail(f"{text!r} is a file, not a directory", param, ctx)
        return text


LOCATION = Location()


def _base_type(hint: Any) -> Any:
    """``int`` for ``int | None``; the item type for ``tuple[str, ...]``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return args[0]
    if typing.get_origin(hint) is tuple:
        return args[0]
    return hint


def option_for(name: str, dest: str | None = None, **override: Any) -> Callable[[F], F]:
    """The click option of one WorkerConfig field.

    ``dest`` names the parameter the command receives (default: the field's
    name); ``override`` replaces click attributes (``required``, ``help``, ...).
    """
    f = _FIELDS[name]
    meta = f.metadata
    hint = _HINTS[name]
    kw: dict[str, Any] = {"help": meta["help"], "envvar": meta["env"], "show_envvar": True}
    if hint is bool:
        kw.update(is_flag=True, default=False)
    elif typing.get_origin(hint) is tuple:
        kw.update(multiple=True, type=LOCATION if meta["directory"] else _base_type(hint))
    else:
        if meta["choices"]:
            kw["type"] = click.Choice(meta["choices"])
        elif meta["directory"]:
            kw["type"] = LOCATION
        else:
            kw["type"] = _base_type(hint)
        if f.default is not dataclasses.MISSING:
            kw["default"] = f.default
            kw["show_default"] = f.default is not None
        elif f.default_factory is not dataclasses.MISSING:
            kw["default"] = f.default_factory()
            kw["show_default"] = True
        else:
            kw["required"] = True
    kw.update(override)
    return click.option(meta["flag"], dest or name, **kw)


#: The settings only ``work`` takes (one process, one /metrics port, exits when idle).
WORK_ONLY = ("metrics_port", "metrics_host", "idle_exit_s", "partitions")


def worker_options(
    exclude: Iterable[str] = (), overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Callable[[F], F]:
    """Add every WorkerConfig setting as an option; the command gets ``config``.

    The command is called with ``config=WorkerConfig(...)`` (not validated:
    commands adjust it, then call :meth:`~imgstream.config.WorkerConfig.validate`)
    in place of the individual settings.
    """
    names = [n for n in _FIELDS if n not in set(exclude)]
    # --bootstrap may come from bootstrap.servers in --kafka-config: validated once built
    overrides = {"bootstrap": {"required": False, "default": None}, **(overrides or {})}

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def command(**kw: Any) -> Any:
            values = {n: kw.pop(n) for n in names}
            return fn(config=build_config(values), **kw)

        decorated: F = command
        for name in reversed(names):
            decorated = option_for(name, **overrides.get(name, {}))(decorated)
        return decorated

    return decorate


def build_config(values: Mapping[str, Any]) -> cfg.WorkerConfig:
    """A WorkerConfig from resolved option values (paths made absolute; unset ones left).

    A ``--kafka-config`` file is read here once, so a bad one fails before
    anything starts; its ``bootstrap.servers`` stands in for ``--bootstrap``.
    """
    given = {k: v for k, v in values.items() if v is not None and v != ()}
    for name in ("out_dir", "kafka_config"):
        if name in given:
            given[name] = absolute(given[name])
    if "roots" in given:
        given["roots"] = tuple(absolute(r) for r in given["roots"])
    if "kafka_config" in given:
        kafka = load_kafka_config(given["kafka_config"])
        if "bootstrap" not in given and kafka.bootstrap:
            given["bootstrap"] = kafka.bootstrap
    given.setdefault("bootstrap", "")
    given.setdefault("out_dir", "")
    return cfg.WorkerConfig(**given)


def load_kafka_config(path: str | None, connect_timeout_s: float | None = None) -> ClientSettings:
    """Read a ``--kafka-config`` file (ConfigError naming the key otherwise) and keep its
    passwords out of every log line this process writes."""
    from imgstream.cli.app import hide_in_logs
    from imgstream.kafka_io import load_client_settings

    timeout = cfg.DEFAULT_CONNECT_TIMEOUT_S if connect_timeout_s is None else connect_timeout_s
    settings = load_client_settings(path, timeout)
    hide_in_logs(settings.secrets())
    return settings


def kafka_options(fn: F) -> F:
    """``--bootstrap``, ``--kafka-config`` and ``--connect-timeout`` for commands that are
    not workers.

    The command gets ``bootstrap`` (from the flag, else the file's
    ``bootstrap.servers``) and ``kafka`` (a ClientSettings).
    """

    @functools.wraps(fn)
    def command(**kw: Any) -> Any:
        timeout = kw.pop("connect_timeout_s")
        if timeout <= 0:
            raise click.BadParameter("must be positive", param_hint="--connect-timeout")
        path = kw.pop("kafka_config")
        kafka = load_kafka_config(os.path.abspath(path) if path else None, timeout)
        kw["bootstrap"] = kw["bootstrap"] or kafka.bootstrap
        if not kw["bootstrap"]:
            raise ConfigError("--bootstrap is required (or bootstrap.servers in --kafka-config)")
        return fn(kafka=kafka, **kw)

    decorated: F = option_for("connect_timeout_s")(command)
    decorated = option_for("kafka_config")(decorated)
    return option_for("bootstrap", required=False, default=None)(decorated)


def topic_options(fn: F) -> F:
    """``--topic-config`` and ``--replication-factor`` for commands that create topics.

    The command gets ``layout`` (a :class:`~imgstream.schema.topics.TopicSettings`).
    """
    from imgstream.schema.topics import topic_settings

    @functools.wraps(fn)
    def command(**kw: Any) -> Any:
        layout = topic_settings(kw.pop("topic_configs"), kw.pop("replication_factor"))
        return fn(layout=layout, **kw)

    decorated: F = option_for("replication_factor")(command)
    return option_for("topic_configs")(decorated)


def tile_options(fn: F) -> F:
    """``--tile``, ``--overlap``, ``--tiles-for-over``."""
    options = [
        click.option(
            "--tile",
            type=int,
            default=None,
            help="Split images into tiles of this many pixels a side.",
        ),
        click.option(
            "--overlap",
            type=int,
            default=None,
            help="Halo pixels around each tile (run: the pipeline's footprint).",
        ),
        click.option(
            "--tiles-for-over",
            "tiles_for_over",
            type=int,
            default=None,
            help="With --tile, tile only images with more pixels than this.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def time_ms(text: str | None, flag: str) -> int | None:
    """Epoch milliseconds from ISO 8601 or digits; a usage error naming ``flag`` otherwise."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    from datetime import datetime, timezone

    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"not ISO 8601 or epoch milliseconds: {text!r}", param_hint=flag
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


def skip_reporter(where: str, why: str) -> None:
    """Tell the user an input was skipped (and why), on stderr."""
    click.echo(f"skipped {where}: {why}", err=True)
