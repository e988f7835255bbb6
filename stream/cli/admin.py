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


@cli.command()
@click.option("--port", type=int, default=None, help="Port (default: a free one).")
def broker(port: int | None) -> None:
    """Run the embedded broker in the foreground and print its bootstrap address."""
    from imgstream.broker import EmbeddedBroker
    from imgstream.signals import stop_on_signals

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
    """List the operations (or show one in detail)."""
    from imgstream.ops import build_registry

    registry = build_registry()
    if name:
        op = registry.get(name)
        click.echo(f"{op.name}  ({op.kind})  {op.help}")
        for p in op.params:
            click.echo(f"  {p.describe()}")
        if op.details:
            click.echo("")
            click.echo(op.details.strip())
        return
    for op in registry:
        params = ",".join(f"{p.name}={'' if p.default is None else p.default}" for p in op.params)
        click.echo(f"{op.name:<10} {params:<44} {op.help}")


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
def status(
    bootstrap: str,
    kafka: ClientSettings,
    group: str,
    topic: str,
    fmt: str,
    watch_s: float | None,
) -> None:
    """Per partition: committed offset, high-watermark, lag in messages and seconds."""
    import json as _json

    from imgstream.kafka_io import group_members, topic_state

    while True:
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
        if watch_s is None:
            return
        time.sleep(watch_s)


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
