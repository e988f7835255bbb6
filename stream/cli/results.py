"""Commands over results: ``aggregate`` and ``query``."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import click

from imgstream.cli.app import cli
from imgstream.cli.options import LOCATION, kafka_options, option_for, time_ms, topic_options
from imgstream.errors import ConfigError
from imgstream.io.stores import absolute

if TYPE_CHECKING:  # kafka is imported only by the commands that talk to a broker
    from imgstream.kafka_io import ClientSettings
    from imgstream.schema.topics import TopicSettings
    from imgstream.store import SQLiteStore


def open_store(db_path: str) -> SQLiteStore:
    """The result store at ``db_path``; a ConfigError naming --db if it is not one."""
    from imgstream.store import SQLiteStore

    try:
        return SQLiteStore(db_path)
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"--db {db_path}: not a result store ({exc})") from None


@cli.command()
@kafka_options
@topic_options
@option_for("group", default="imgstream-aggregate", envvar="IMGSTREAM_AGGREGATE_GROUP")
@option_for("results_topic")
@option_for("dlq_topic")
@click.option(
    "--db", "db_path", required=True, type=click.Path(dir_okay=False), help="SQLite store."
)
@click.option(
    "--out",
    type=LOCATION,
    default=None,
    help="Directory or s3://bucket/prefix fused outputs go to (default: beside the tiles' "
    "outputs).",
)
@click.option("--tile-timeout", type=float, default=300.0, show_default=True)
@click.option(
    "--idle-exit",
    "idle_exit_s",
    type=float,
    default=None,
    help="Exit after this many seconds without a new record (counted once the group "
    "has assigned partitions).",
)
def aggregate(
    bootstrap: str,
    kafka: ClientSettings,
    layout: TopicSettings,
    group: str,
    results_topic: str,
    dlq_topic: str,
    db_path: str,
    out: str | None,
    tile_timeout: float,
    idle_exit_s: float | None,
) -> None:
    """Merge results into a queryable store, accumulate statistics, fuse tiles."""
    from imgstream.cli.signals import stop_on_signals
    from imgstream.clock import SystemClock
    from imgstream.config import default_worker_id
    from imgstream.consumers.aggregator import Aggregator, AggregatorLoop
    from imgstream.kafka_io import KafkaSink, KafkaSource, ensure_topics

    store = open_store(db_path)
    roles = {results_topic: "results", dlq_topic: "dlq"}
    ensure_topics(bootstrap, {results_topic: 4, dlq_topic: 1}, kafka, roles, layout)
    sink = KafkaSink(bootstrap, "imgstream-aggregate", settings=kafka)
    agg = Aggregator(
        store,
        sink,
        results_topic,
        dlq_topic,
        SystemClock(),
        "aggregator-" + default_worker_id(),
        absolute(out) if out is not None else None,
        tile_timeout,
    )
    source = KafkaSource(
        bootstrap, group, [results_topic, dlq_topic], settings=kafka, fetch_max_wait_ms=50
    )
    stop = stop_on_signals()
    loop = AggregatorLoop(agg, source, stop=stop, idle_exit_s=idle_exit_s)
    try:
        loop.run()
    finally:
        sink.close()
        store.close()
    click.echo(
        f"stored {loop.records} new records; stitched {agg.fused}; incomplete {agg.incomplete};"
        f" skipped {agg.rejected} invalid records"
    )


@cli.command()
@click.option("--db", "db_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--source", default=None)
@click.option("--since", default=None, help="ISO 8601 time or epoch ms (inclusive).")
@click.option("--until", default=None, help="ISO 8601 time or epoch ms (exclusive).")
@click.option("--pipeline", default=None, help="Pipeline hash or canonical spec.")
@click.option("--has", type=click.Choice(["faces", "plates", "qr", "contours"]), default=None)
@click.option("--id", "ref_id", default=None, help="A ref id (a parent also lists its tiles).")
@click.option("--kind", type=click.Choice(["result", "failure"]), default=None)
@click.option("--limit", type=int, default=None)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@click.option("--summary", is_flag=True, help="Accumulated statistics per source instead.")
def query(
    db_path: str,
    source: str | None,
    since: str | None,
    until: str | None,
    pipeline: str | None,
    has: str | None,
    ref_id: str | None,
    kind: str | None,
    limit: int | None,
    fmt: str,
    summary: bool,
) -> None:
    """Answer from the store the aggregator fills."""
    import json as _json

    from imgstream.store import Query

    store = open_store(db_path)
    try:
        if summary:
            sums = store.summary()
            if fmt == "json":
                click.echo(_json.dumps({k: v.to_dict() for k, v in sums.items()}, indent=2))
                return
            click.echo(
                f"{'source':<20} {'ok':>7} {'failed':>7} {'megapixels':>11} "
                f"{'brightness':>10}  failures"
            )
            for name, acc in sorted(sums.items()):
                b = acc.mean_brightness
                fails = ", ".join(f"{t}: {n}" for t, n in sorted(acc.failures.items()))
                click.echo(
                    f"{name:<20} {acc.ok:>7} {sum(acc.failures.values()):>7} "
                    f"{acc.pixels / 1e6:>11.2f} {'' if b is None else f'{b:.1f}':>10}  "
                    f"{fails}"
                )
            return
        q = Query(
            source,
            time_ms(since, "--since"),
            time_ms(until, "--until"),
            pipeline,
            has,
            ref_id,
            kind,
            limit,
        )
        rows = store.query(q)
    finally:
        store.close()
    if fmt == "json":
        for row in rows:
            click.echo(_json.dumps(row, separators=(",", ":")))
        return
    click.echo(f"{'id':<36} {'kind':<8} {'source':<14} {'pipeline':<12} {'size':>11}  detail")
    for r in rows:
        size = f"{r.get('width', '')}x{r.get('height', '')}" if r["kind"] == "result" else ""
        if r["kind"] == "result":
            dets = [
                f"{k}={v.get('count')}"
                for k, v in (r.get("outputs") or {}).items()
                if isinstance(v, dict) and "count" in v
            ]
            detail = " ".join(dets) or (r.get("output_uri") or "")
        else:
            detail = f"{r['error']['type']}: {r['error']['message']}"
        click.echo(
            f"{r.get('id')!s:<36} {r['kind']:<8} {r.get('source')!s:<14} "
            f"{r.get('pipeline_hash', '')!s:<12} {size:>11}  {detail}"
        )
