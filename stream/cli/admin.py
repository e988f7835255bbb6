"""Commands around the broker: ``broker``, ``ops``, ``status``, ``offsets reset``."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from imgstream.cli.app import cli
from imgstream.cli.options import kafka_options, option_for, time_ms

if TYPE_CHECKING:  # kafka is imported only by the commands that talk to a broker
    from imgstream.kafka_io import ClientSettings
    from imgstream.ops import Operation


@cli.command()
@click.option("--port", type=int, default=None, help="Port (default: a free one).")
def broker(port: int | None) -> None:
    """Run the embedded broker in the foreground and print its bootstrap address."""
    from imgstream.broker import EmbeddedBroker
    from imgstream.cli.signals import stop_on_signals

    b = EmbeddedBroker(port=port).start()
    click.echo(b.bootstrap, nl=True)
    sys.stdout.flush()
    click.echo(f"embedded broker on {b.bootstrap} (memory only); Ctrl-C to stop", err=True)
    stop = stop_on_signals()
    try:
        while not stop.is_set() and b.alive():
            time.sleep(0.2)
    finally:
        b.stop()


@cli.command()
@click.argument("name", required=False)
def ops(name: str | None) -> None:
    """List the operations, built-in and from plugins (or show one in detail)."""
    from imgstream.ops import build_registry

    registry = build_registry()
    if name:
        op = registry.get(name)
        where = op.kind if op.dist is None else f"{op.kind}, {op.origin}"
        click.echo(f"{op.name}  ({where})  {op.help}")
        if op.equals:
            click.echo(f"  equals: {op.equals.replace('``', '')}")
        for p in op.params:
            click.echo(f"  {p.describe()}")
        if op.details:
            click.echo("")
            click.echo(op.details.strip())
        return
    width = max([10, *(len(op.name) for op in registry)])
    groups: dict[str, list[Operation]] = {}  # "" holds the built-ins, listed first
    for op in registry:
        groups.setdefault("" if op.dist is None else op.origin, []).append(op)
    for origin in sorted(groups):
        if origin:
            click.echo(f"\nfrom the plugin {origin}:")
        for op in groups[origin]:
            params = ",".join(
                f"{p.name}={'' if p.default is None else p.default}" for p in op.params
            )
            kind = f"({op.kind}) " if origin and op.kind != "image" else ""
            click.echo(f"{op.name:<{width}} {params:<44} {kind}{op.help}")


@cli.command()
@kafka_options
@option_for("group")
@option_for("refs_topic", "topic")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option(
    "--watch",
    "watch_s",
    type=float,
    default=None,
    is_flag=False,
    flag_value=2.0,
    help="Refresh every N seconds (default 2) until interrupted.",
)
@click.option(
    "--capture",
    "capture_urls",
    multiple=True,
    metavar="URL",
    help="A running capture's /metrics (host:port or URL; repeatable): show its cameras.",
)
def status(
    bootstrap: str,
    kafka: ClientSettings,
    group: str,
    topic: str,
    fmt: str,
    watch_s: float | None,
    capture_urls: tuple[str, ...],
) -> None:
    """Per partition: committed offset, high-watermark, lag in messages and seconds;
    with --capture, the health of each camera of a running capture."""
    import json as _json

    from imgstream.kafka_io import group_members, topic_state

    while True:
        cameras, unreachable = _cameras(capture_urls)
        states = topic_state(bootstrap, topic, group, pending_ts=True, settings=kafka)
        members = group_members(bootstrap, group, kafka)
        now = time.time() * 1000
        rows: list[dict[str, Any]] = [
            {
                "partition": st.partition,
                "committed": st.committed,
                "highwater": st.highwater,
                "lag": st.lag,
                "lag_seconds": round((now - st.oldest_pending_ms) / 1000, 3)
                if st.oldest_pending_ms is not None and st.lag
                else 0.0,
            }
            for st in states
        ]
        if fmt == "json":
            click.echo(
                _json.dumps(
                    {
                        "group": group,
                        "topic": topic,
                        "partitions": rows,
                        "lag": sum(r["lag"] for r in rows),
                        "members": members,
                        **(
                            {"cameras": cameras, "unreachable": unreachable} if capture_urls else {}
                        ),
                    }
                )
            )
        else:
            if watch_s is not None:
                click.clear()
            click.echo(f"group {group}   topic {topic}")
            click.echo(
                f"{'partition':>9} {'committed':>10} {'highwater':>10} {'lag':>8} {'lag_s':>8}"
            )
            for r in rows:
                committed = "-" if r["committed"] is None else r["committed"]
                click.echo(
                    f"{r['partition']:>9} {committed!s:>10} {r['highwater']:>10} "
                    f"{r['lag']:>8} {r['lag_seconds']:>8.1f}"
                )
            click.echo(f"{'total':>9} {'':>10} {'':>10} {sum(r['lag'] for r in rows):>8}")
            if members is None:
                click.echo("members: not available (the broker did not describe the group)")
            else:
                click.echo(f"members: {len(members)}")
                for m in members:
                    owned = ",".join(m["partitions"]) or "-"
                    click.echo(f"  {m['member']}  {m['client']}  {m['host']}  {owned}")
            if capture_urls:
                _echo_cameras(cameras, unreachable)
        if watch_s is None:
            return
        time.sleep(watch_s)


def _cameras(urls: tuple[str, ...]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Camera name -> its health, from the /metrics of running captures; unreachable URLs."""
    import urllib.request

    from imgstream.metrics import camera_health

    cameras: dict[str, dict[str, float]] = {}
    unreachable: list[str] = []
    for url in urls:
        full = url if "://" in url else f"http://{url}/metrics"
        try:
            with urllib.request.urlopen(full, timeout=5) as resp:
                cameras.update(camera_health(resp.read().decode("utf-8", "replace")))
        except (OSError, ValueError) as exc:
            unreachable.append(f"{full} ({getattr(exc, 'reason', exc)})")
    return cameras, unreachable


def _echo_cameras(cameras: dict[str, dict[str, float]], unreachable: list[str]) -> None:
    """The cameras table of ``status``."""
    click.echo(
        f"{'camera':<16} {'connected':>9} {'stored':>8} {'skipped':>8} {'dropped':>8} "
        f"{'failed':>7} {'reconn':>7} {'age_s':>7} {'size':>10} {'outages':>7}"
    )
    counted = ("stored", "skipped", "dropped", "failed", "reconnects", "outages")
    for name, c in sorted(cameras.items()):
        size = f"{c.get('width', 0):.0f}x{c.get('height', 0):.0f}" if c.get("width") else "-"
        n = {k: c.get(k, 0.0) for k in counted}
        click.echo(
            f"{name:<16} {'yes' if c.get('connected') else 'NO':>9} {n['stored']:>8.0f} "
            f"{n['skipped']:>8.0f} {n['dropped']:>8.0f} {n['failed']:>7.0f} "
            f"{n['reconnects']:>7.0f} "
            f"{c.get('last_frame_age_seconds', 0):>7.1f} {size:>10} {n['outages']:>7.0f}"
        )
    for url in unreachable:
        click.echo(f"capture not reachable: {url}")


@cli.group()
def offsets() -> None:
    """Inspect or move a consumer group's committed offsets."""


@offsets.command("reset")
@kafka_options
@option_for(
    "group", required=True, default=None, show_default=False, envvar=None, show_envvar=False
)
@option_for("refs_topic", "topic")
@click.option("--to-time", default=None, help="The first offset at or after this time.")
@click.option("--to-earliest", is_flag=True)
@click.option("--to-latest", is_flag=True)
def offsets_reset(
    bootstrap: str,
    kafka: ClientSettings,
    group: str,
    topic: str,
    to_time: str | None,
    to_earliest: bool,
    to_latest: bool,
) -> None:
    """Reset a group's offsets (refused while the group has live members)."""
    from imgstream.kafka_io import (
        commit_group_offsets,
        first_offsets_at,
        group_members,
        topic_state,
    )

    chosen = [
        n
        for n, v in (
            ("--to-time", to_time),
            ("--to-earliest", to_earliest),
            ("--to-latest", to_latest),
        )
        if v
    ]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --to-time, --to-earliest, --to-latest")
    members = group_members(bootstrap, group, kafka)
    if members:
        raise click.UsageError(
            f"group {group!r} has {len(members)} live member(s); stop its workers first"
        )
    if members is None:
        click.echo(
            "warning: the broker cannot tell whether the group has live members; "
            "make sure its workers are stopped",
            err=True,
        )
    states = topic_state(bootstrap, topic, settings=kafka)
    if to_earliest:
        target = {st.partition: 0 for st in states}
    elif to_latest:
        target = {st.partition: st.highwater for st in states}
    else:
        when = time_ms(to_time, "--to-time")
        assert when is not None
        target = first_offsets_at(bootstrap, topic, when, kafka)
    commit_group_offsets(bootstrap, group, topic, target, kafka)
    for p, o in sorted(target.items()):
        click.echo(f"{topic}[{p}] -> {o}")
