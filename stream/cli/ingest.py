"""Commands that produce refs.

``produce`` (files, globs, manifests, tiles, ``--watch``) and ``capture``.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

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
from imgstream.stores import absolute

if TYPE_CHECKING:  # kafka is imported only by the commands that talk to a broker
    from imgstream.kafka_io import ClientSettings
    from imgstream.topics import TopicSettings


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
    from imgstream.clock import SystemClock
    from imgstream.kafka_io import KafkaSink, ensure_topics
    from imgstream.partitioning import make_partitioner
    from imgstream.producers.watch import State, watch
    from imgstream.records import ImageRef
    from imgstream.signals import stop_on_signals

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


@cli.command()
@click.argument("video")
@kafka_options
@topic_options
@option_for("refs_topic", "topic")
@click.option("--fps", type=float, default=5.0, show_default=True, help="Frames per second kept.")
@click.option("--source", default=None, help="Source name (default: the file's stem, or camN).")
@click.option(
    "--store",
    "store_dir",
    type=LOCATION,
    default="captures",
    show_default=True,
    help="Folder or s3://bucket/prefix frames are stored in (workers need it under --root).",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=90,
    show_default=True,
    help="JPEG quality of stored frames.",
)
@click.option("--max-frames", type=int, default=None, help="Stop after storing this many frames.")
@click.option(
    "--duration", "duration_s", type=float, default=None, help="Stop after this many seconds."
)
@click.option(
    "--realtime/--no-realtime",
    default=False,
    show_default=True,
    help="Play a file at its own pace (live sources always are).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve Prometheus /metrics (frames stored/skipped, reconnects) on this port.",
)
@click.option(
    "--partitions",
    type=int,
    default=4,
    show_default=True,
    help="Partitions when the topic has to be created.",
)
def capture(
    video: str,
    bootstrap: str,
    kafka: ClientSettings,
    layout: TopicSettings,
    topic: str,
    fps: float,
    source: str | None,
    store_dir: str,
    quality: int,
    max_frames: int | None,
    duration_s: float | None,
    realtime: bool,
    metrics_port: int | None,
    partitions: int,
) -> int:
    """Capture frames from a video file, camera device (0, 1, ...) or stream URL."""
    from imgstream.clock import SystemClock
    from imgstream.codec import encode
    from imgstream.kafka_io import KafkaSink, ensure_topics
    from imgstream.partitioning import BySource, partition_key
    from imgstream.producers.capture import capture as run_capture
    from imgstream.signals import stop_on_signals

    if fps <= 0:
        raise click.BadParameter("must be positive", param_hint="--fps")
    if source is None:
        source = f"cam{video}" if video.isdigit() else os.path.splitext(os.path.basename(video))[0]
    ensure_topics(bootstrap, {topic: partitions}, kafka, {topic: "refs"}, layout)
    sink = KafkaSink(bootstrap, "imgstream-capture", settings=kafka)
    n = sink.partitions(topic)
    partitioner = BySource()
    futures = []
    stop = stop_on_signals()
    from imgstream.metrics import Metrics

    metrics = Metrics()
    if metrics_port is not None:
        metrics.serve(metrics_port)

    def on_event(event: str) -> None:
        if event == "reconnect":
            metrics.capture_reconnects.inc()
        else:
            metrics.capture_frames.labels(outcome=event).inc()

    def emit(ref: Any) -> None:
        futures.append(
            sink.send_partition(
                topic, partitioner.partition(ref, n), partition_key(ref), encode(ref)
            )
        )

    try:
        stats = run_capture(
            video,
            source,
            absolute(store_dir),
            emit,
            SystemClock(),
            fps=fps,
            realtime=realtime,
            quality=quality,
            max_frames=max_frames,
            duration_s=duration_s,
            should_stop=lambda: stop.is_set(),
            on_event=on_event,
        )
        sink.flush()
    finally:
        sink.close()
    failed = sum(1 for f in futures if f.failed())
    click.echo(
        f"captured {stats.stored} frames from {video} as {source!r} "
        f"({stats.read} read, {stats.dropped} skipped by --fps, {stats.reconnects} reconnects)"
        f" -> {topic}" + (f"; {failed} NOT delivered" if failed else "")
    )
    return 1 if failed else 0
