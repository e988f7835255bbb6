"""Commands that produce refs.

``produce`` (files, globs, manifests, tiles, ``--watch``); ``capture`` is in
:mod:`imgstream.cli.capture`.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from imgstream.cli.app import cli
from imgstream.cli.options import (
    LOCATION,
    PARTITION_CHOICES,
    kafka_options,
    option_for,
    skip_reporter,
    tile_options,
    topic_options,
)
from imgstream.errors import ConfigError

if TYPE_CHECKING:  # kafka is imported only by the commands that talk to a broker
    from imgstream.kafka_io import ClientSettings
    from imgstream.schema.topics import TopicSettings


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@kafka_options
@topic_options
@option_for("refs_topic", "topic")
@click.option("--partition-by", type=PARTITION_CHOICES, default="sequential", show_default=True)
@click.option("--seed", type=int, default=None, help="Seed for --partition-by random.")
@click.option("--source", default=None, help="Source name (default: the parent folder's name).")
@click.option(
    "--partitions",
    type=int,
    default=4,
    show_default=True,
    help="Partitions when the topic has to be created.",
)
@tile_options
@click.option(
    "--watch",
    is_flag=True,
    help="Keep going: produce new files in the input directories once complete.",
)
@click.option(
    "--state",
    "state_path",
    default="imgstream-watch.json",
    show_default=True,
    help="With --watch: the file remembering what was produced (across restarts).",
)
@click.option(
    "--settle",
    type=float,
    default=1.0,
    show_default=True,
    help="With --watch: seconds a file must stop changing before it is produced.",
)
@click.option(
    "--tile-store",
    type=LOCATION,
    default=None,
    help="Directory or s3://bucket/prefix the tiles are written to (needed with --tile; "
    "workers need it under a --root).",
)
def produce(
    inputs: tuple[str, ...],
    bootstrap: str,
    kafka: ClientSettings,
    layout: TopicSettings,
    topic: str,
    partition_by: str,
    seed: int | None,
    source: str | None,
    partitions: int,
    tile: int | None,
    overlap: int | None,
    tiles_for_over: int | None,
    watch: bool,
    state_path: str,
    settle: float,
    tile_store: str | None,
) -> int:
    """Produce refs for files, directories, globs and @manifests (optionally tiled)."""
    if partitions < 1:
        raise click.BadParameter("must be at least 1", param_hint="--partitions")
    if watch:
        if tile is not None:
            raise click.UsageError("--watch and --tile cannot be combined")
        return _watch(
            inputs,
            bootstrap,
            kafka,
            layout,
            topic,
            partition_by,
            seed,
            source,
            partitions,
            state_path,
            settle,
        )
    if tile is not None and tile_store is None:
        raise click.UsageError("--tile needs --tile-store DIR")
    from tqdm import tqdm

    from imgstream.kafka_io import KafkaSink, ensure_topics
    from imgstream.partitioning import make_partitioner
    from imgstream.producers.inputs import collect_inputs, tiled_refs
    from imgstream.producers.produce import produce_refs

    partitioner = make_partitioner(partition_by, seed)
    found = collect_inputs(inputs, source, partition_by, skip_reporter)
    refs, parents = tiled_refs(
        found, tile, overlap if overlap is not None else 32, tile_store or "", tiles_for_over
    )
    ensure_topics(bootstrap, {topic: partitions}, kafka, {topic: "refs"}, layout)
    sink = KafkaSink(bootstrap, "imgstream-produce", settings=kafka)
    bar = tqdm(unit="ref", disable=not sys.stderr.isatty(), desc="producing")
    try:
        report = produce_refs(refs, sink, topic, partitioner, on_sent=lambda _r: bar.update())
    finally:
        bar.close()
        sink.close()
    spread = " ".join(f"p{p}={n}" for p, n in sorted(report.per_partition.items()))
    click.echo(
        f"produced {report.sent} refs to {topic} in {report.seconds:.2f}s "
        f"({report.rate:.0f} refs/s); partitions: {spread or '-'}"
        + (f"; {len(parents)} images tiled" if parents else "")
        + (f"; {report.failed} NOT delivered" if report.failed else "")
    )
    return 1 if report.failed else 0


def _watch(
    inputs: tuple[str, ...],
    bootstrap: str,
    kafka: ClientSettings,
    layout: TopicSettings,
    topic: str,
    partition_by: str,
    seed: int | None,
    source: str | None,
    partitions: int,
    state_path: str,
    settle: float,
) -> int:
    """Produce each new, complete file in the directories once; until interrupted."""
    from imgstream.cli.signals import stop_on_signals
    from imgstream.clock import SystemClock
    from imgstream.kafka_io import KafkaSink, ensure_topics
    from imgstream.partitioning import make_partitioner
    from imgstream.producers.watch import State, watch
    from imgstream.schema.records import ImageRef

    dirs = [os.path.abspath(i) for i in inputs if os.path.isdir(i)]
    if not dirs:
        raise click.UsageError("--watch needs at least one directory to watch")
    if settle < 0:
        raise click.BadParameter("must not be negative", param_hint="--settle")
    partitioner = make_partitioner(partition_by, seed)
    try:
        state = State(state_path)
    except ValueError as exc:  # not JSON, or not ours
        raise ConfigError(f"--state {state_path}: not a watch state file ({exc})") from None
    ensure_topics(bootstrap, {topic: partitions}, kafka, {topic: "refs"}, layout)
    sink = KafkaSink(bootstrap, "imgstream-watch", settings=kafka)
    stop = stop_on_signals()

    def report(ref: ImageRef, delivered: bool) -> None:
        click.echo(f"{'produced' if delivered else 'NOT delivered'} {ref.id} {ref.uri}")

    click.echo(f"watching {', '.join(dirs)} (Ctrl-C to stop)", err=True)
    try:
        produced = watch(
            dirs,
            sink,
            topic,
            partitioner,
            state,
            SystemClock(),
            stop.is_set,
            settle_s=settle,
            source=source,
            partition_by=partition_by,
            on_produced=report,
        )
    finally:
        sink.close()
    click.echo(f"stopped watching; produced {produced} refs", err=True)
    return 0
