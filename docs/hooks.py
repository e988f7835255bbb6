"""MkDocs hook: the reference pages' tables, generated from the code at build time.

A page holds a marker such as ``<!-- reference: operations -->``; the build
replaces it with the table made from the code's own registries, so the
reference cannot drift from the code:

* ``operations``: :func:`imgstream.ops.build_registry` (built-ins, and the
  installed plugins, which are marked as such): name, kind, parameters with
  types, defaults and ranges, and the operation's own documentation;
* ``metrics``: every collector that :class:`imgstream.metrics.Metrics` and
  :class:`~imgstream.metrics.CameraMetrics` register on a fresh registry;
* ``settings``: the settings table (:func:`imgstream.config.settings`) with
  each flag's ``IMGSTREAM_*`` variable, and the other variables the
  commands' options read;
* ``records``: the fields of the record dataclasses in :mod:`imgstream.schema.records`;
* ``exit-codes``: :func:`imgstream.errors.exit_codes`.

``tests/unit/test_docs_reference.py`` imports this file and checks that each
table names everything its registry holds. Nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from typing import Any

MARKER = re.compile(r"<!-- reference: ([a-z-]+) -->")


def _cell(text: object) -> str:
    """Text safe in a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: object) -> str:
    return f"`{_cell(text)}`" if str(text) != "" else ""


def _rst(text: str) -> str:
    """A docstring's reStructuredText bits as Markdown: ``x`` -> `x`, :role:`x` -> `x`."""
    text = re.sub(r":[a-z:]+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def operations() -> list[Any]:
    """Every operation of the registry the worker builds (plugins included)."""
    from imgstream.ops import build_registry

    return list(build_registry())


def operations_md() -> str:
    """One section per operation: kind, parameters, what it equals."""
    out = []
    ops = operations()
    out.append("| operation | kind | what it does |")
    out.append("|---|---|---|")
    for op in ops:
        origin = "" if op.dist is None else f" (plugin: {op.origin})"
        anchor = f"[`{op.name}`](#op-{op.name})"
        out.append(f"| {anchor} | {op.kind} | {_cell(_rst(op.help))}{_cell(origin)} |")
    out.append("")
    for op in ops:
        out.append(f"### `{op.name}` {{ #op-{op.name} }}")
        out.append("")
        flags = [op.kind]
        if op.stateful:
            flags.append("stateful (per source)")
        if op.footprint({p.name: p.default for p in op.params}) is None:
            flags.append("whole image (not on tiles)")
        if op.dist is not None:
            flags.append(f"plugin {op.origin}")
        out.append(f"*{', '.join(flags)}* · canonical form `{op.qualified}`")
        out.append("")
        out.append(_rst(op.help).rstrip(".") + ".")
        out.append("")
        if op.equals:
            out.append(f"**Equals** {_rst(op.equals)}.")
            out.append("")
        if op.params:
            out.append("| parameter | type | default | valid | help |")
            out.append("|---|---|---|---|---|")
            for p in op.params:
                default = "(unset)" if p.default is None else repr(p.default)
                valid = []
                if p.choices is not None:
                    valid.append(" \\| ".join(str(c) for c in p.choices))
                if p.min is not None:
                    valid.append(f">= {p.min}")
                if p.max is not None:
                    valid.append(f"<= {p.max}")
                out.append(
                    f"| `{p.name}` | {p.type.__name__} | {_code(default)} "
                    f"| {_cell(', '.join(valid))} | {_cell(_rst(p.help))} |"
                )
            out.append("")
        else:
            out.append("No parameters.")
            out.append("")
        if op.details.strip():
            out.append(_rst(_dedent(op.details)))
            out.append("")
    return "\n".join(out)


def _spec_form(op: Any) -> str:
    """``name:key=default,...`` as a spec spells the operation with its defaults."""
    params = ",".join(f"{p.name}={'' if p.default is None else p.default}" for p in op.params)
    return op.name if not params else f"{op.name}:{params}"


def _equals_md(kind: str) -> str:
    """The built-in operations of ``kind`` and the library call each equals."""
    from imgstream.ops import build_registry

    out = ["| operation | equals |", "|---|---|"]
    for op in build_registry(()):
        if op.kind == kind:
            link = f"[`{_spec_form(op)}`](../reference/operations.md#op-{op.name})"
            out.append(f"| {_cell(link)} | {_cell(_rst(op.equals))} |")
    return "\n".join(out)


def _dedent(text: str) -> str:
    import inspect

    return inspect.cleandoc(text)


def metric_families() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(exposed name, type, help, labels) of every metric imgstream registers."""
    from prometheus_client import CollectorRegistry

    from imgstream.metrics import CameraMetrics, Metrics

    registry = CollectorRegistry()
    holders = [Metrics(registry), CameraMetrics(registry)]
    labels: dict[str, tuple[str, ...]] = {}
    for holder in holders:
        for value in vars(holder).values():
            name = getattr(value, "_name", None)
            if isinstance(name, str):
                labels[name] = tuple(getattr(value, "_labelnames", ()))
    rows = []
    for family in registry.collect():
        exposed = family.name + ("_total" if family.type == "counter" else "")
        rows.append((exposed, family.type, family.documentation, labels.get(family.name, ())))
    return rows


def metrics_md() -> str:
    out = ["| metric | type | labels | help |", "|---|---|---|---|"]
    for name, kind, doc, labels in metric_families():
        out.append(
            f"| `{name}` | {kind} | {_cell(', '.join(f'`{x}`' for x in labels))} | {_cell(doc)} |"
        )
    return "\n".join(out)


def settings_rows() -> list[tuple[str, str, str, str]]:
    """(flag, environment variable, default, help) of the settings table."""
    from dataclasses import MISSING

    from imgstream.config import settings

    rows = []
    for f in settings():
        if f.default is not MISSING:
            default = "" if f.default is None else repr(f.default)
        else:
            default = "(computed)"
        rows.append((f.metadata["flag"], f.metadata["env"], default, f.metadata["help"]))
    return rows


def command_envvars() -> list[tuple[str, str, str]]:
    """(variable, command, option) for each option with an environment variable."""
    import click

    from imgstream.cli import cli

    found: list[tuple[str, str, str]] = []

    def walk(cmd: click.Command, path: str) -> None:
        for param in cmd.params:
            envvar = getattr(param, "envvar", None)
            names = [envvar] if isinstance(envvar, str) else list(envvar or ())
            for name in names:
                found.append((name, path, "/".join(param.opts)))
        if isinstance(cmd, click.Group):
            for sub_name, sub in sorted(cmd.commands.items()):
                walk(sub, f"{path} {sub_name}")

    walk(cli, "imgstream")
    return found


def settings_md() -> str:
    out = [
        "| flag | environment | default | help |",
        "|---|---|---|---|",
    ]
    table = settings_rows()
    for flag, env, default, help_ in table:
        out.append(f"| `{flag}` | `{env}` | {_code(default)} | {_cell(help_)} |")
    in_table = {env for _, env, _, _ in table}
    extra: dict[str, list[str]] = {}
    for env, command, option in command_envvars():
        if env not in in_table:
            extra.setdefault(env, []).append(f"`{command} {option}`")
    if extra:
        out += ["", "Other options that read the environment:", ""]
        out += ["| environment | options |", "|---|---|"]
        for env, where in sorted(extra.items()):
            out.append(f"| `{env}` | {', '.join(sorted(set(where)))} |")
    return "\n".join(out)


def record_classes() -> list[type]:
    """The record dataclasses of :mod:`imgstream.schema.records`, in definition order."""
    from imgstream.schema import records

    return [
        obj
        for obj in vars(records).values()
        if isinstance(obj, type)
        and dataclasses.is_dataclass(obj)
        and obj.__module__ == records.__name__
    ]


def records_md() -> str:
    out = []
    for cls in record_classes():
        out.append(f"### `{cls.__name__}`")
        out.append("")
        doc = _dedent(cls.__doc__ or "")
        if doc:
            out.append(_rst(doc))
            out.append("")
        out.append("| field | type | default |")
        out.append("|---|---|---|")
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = repr(f.default_factory())
            else:
                default = "required"
            out.append(f"| `{f.name}` | `{_cell(f.type)}` | {_cell(default)} |")
        out.append("")
    return "\n".join(out)


def exit_codes_md() -> str:
    from imgstream.errors import exit_codes

    out = ["| code | meaning | raised as |", "|---|---|---|"]
    for code, meaning, names in exit_codes():
        classes = ", ".join(f"`{n}`" for n in names)
        out.append(f"| {code} | {_cell(meaning)} | {classes} |")
    return "\n".join(out)


def api_names() -> list[str]:
    """The Python API's public names (``imgstream.api.__all__``)."""
    from imgstream import api

    return list(api.__all__)


def _signature(obj: Any) -> str:
    import inspect

    try:
        text = str(inspect.signature(obj)).replace("'", "")
    except (TypeError, ValueError):
        return ""
    return text.replace("(self, ", "(").replace("(self)", "()")


def python_api_md() -> str:
    import inspect

    from imgstream import api

    out = []
    for name in api_names():
        obj = getattr(api, name)
        what = "class" if inspect.isclass(obj) else "function"
        sig = "" if what == "class" and name != "FileResult" else _signature(obj)
        out += [f"### `imgstream.{name}` {{ #api-{name.lower()} }}", ""]
        out += [f"*{what}*" + (f" `{name}{_cell(sig)}`" if sig else ""), ""]
        out += [_rst(inspect.cleandoc(obj.__doc__ or "")), ""]
        if not inspect.isclass(obj):
            continue
        for member, value in vars(obj).items():
            if member.startswith("_"):
                continue
            if isinstance(value, property):
                doc, label = value.__doc__ or "", f"`{name}.{member}` *(property)*"
            elif isinstance(value, (classmethod, staticmethod)):
                fn = getattr(obj, member)
                doc, label = fn.__doc__ or "", f"`{name}.{member}{_cell(_signature(fn))}`"
            elif inspect.isfunction(value):
                doc, label = value.__doc__ or "", f"`{name}.{member}{_cell(_signature(value))}`"
            else:
                continue
            out += [f"- {label}: {_rst(' '.join(inspect.cleandoc(doc).split()))}"]
        out.append("")
    return "\n".join(out)


GENERATORS: dict[str, Callable[[], str]] = {
    "python-api": python_api_md,
    "operations": operations_md,
    "equals-image": lambda: _equals_md("image"),
    "equals-analysis": lambda: _equals_md("analysis"),
    "equals-batch": lambda: _equals_md("batch"),
    "metrics": metrics_md,
    "settings": settings_md,
    "records": records_md,
    "exit-codes": exit_codes_md,
}


def render(markdown: str) -> str:
    """``markdown`` with every reference marker replaced by its table."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise KeyError(f"unknown reference marker {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(one, markdown)


def markers(markdown: str) -> Iterator[str]:
    """The reference markers a page holds."""
    return (m.group(1) for m in MARKER.finditer(markdown))


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs event: fill the page's reference markers."""
    return render(markdown)
