"""The ``imgstream`` command.

Configuration is resolved here, once: flags > ``IMGSTREAM_*`` environment >
defaults. Exceptions of :mod:`stream.errors` become their exit codes here and
nowhere else.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from stream import config as cfg
from stream.errors import ImgstreamError

F = Callable[..., Any]


_bootstrap = click.option(
    "--bootstrap",
    envvar="IMGSTREAM_BOOTSTRAP",
    required=True,
    help="Kafka bootstrap servers host:port.",
)


def _worker_options(fn: F) -> F:
    options = [
        click.option(
            "--group",
            envvar="IMGSTREAM_GROUP",
            default=cfg.DEFAULT_GROUP,
            show_default=True,
            help="Consumer group.",
        ),
        click.option(
            "--topic",
            "refs_topic",
            envvar="IMGSTREAM_TOPIC",
            default=cfg.REFS_TOPIC,
            show_default=True,
            help="Refs topic.",
        ),
        click.option("--results-topic", default=cfg.RESULTS_TOPIC, show_default=True),
        click.option("--dlq-topic", default=cfg.DLQ_TOPIC, show_default=True),
        click.option(
            "--ops",
            envvar="IMGSTREAM_OPS",
            default="gray",
            show_default=True,
            help="Pipeline spec, e.g. 'gray' (see `imgstream ops`).",
        ),
        click.option(
            "--root",
            "roots",
            multiple=True,
            type=click.Path(file_okay=False),
            help="Directory references may resolve under (repeatable).",
        ),
        click.option(
            "--max-batch",
            type=int,
            default=16,
            show_default=True,
            help="Close a batch at this many images.",
        ),
        click.option(
            "--max-wait",
            "max_wait_s",
            type=float,
            default=0.5,
            show_default=True,
            help="Close a batch this many seconds after its first image.",
        ),
        click.option(
            "--threads",
            type=int,
            default=max(2, (os.cpu_count() or 2)),
            show_default=True,
            help="Image threads per worker.",
        ),
        click.option(
            "--format",
            "output_format",
            type=click.Choice(["png", "jpg", "webp"]),
            default="png",
            show_default=True,
            help="Output image format.",
        ),
        click.option(
            "--max-bytes",
            type=int,
            default=64 << 20,
            show_default=True,
            help="Refuse input files larger than this.",
        ),
        click.option(
            "--max-pixels",
            type=int,
            default=100_000_000,
            show_default=True,
            help="Refuse images with more pixels than this (checked before decoding).",
        ),
        click.option(
            "--allow-hardlinks", is_flag=True, help="Read files that have several hard links."
        ),
        click.option(
            "--max-poll-interval",
            "max_poll_interval_ms",
            type=click.IntRange(1000),
            default=60000,
            show_default=True,
            help="Kafka max.poll.interval.ms in ms (the worker keeps polling while batches run).",
        ),
        click.option(
            "--max-age",
            "max_age_s",
            type=float,
            default=None,
            help="Skip refs older than this many seconds at batch start (failure "
            "'stale'): live dashboards want fresh frames.",
        ),
        click.option(
            "--image-timeout",
            "image_timeout_s",
            type=float,
            default=None,
            help="An image still running after this many seconds becomes a "
            "'timeout' failure and its partition moves on.",
        ),
        click.option(
            "--target-latency",
            "target_latency_s",
            type=float,
            default=None,
            help="Adapt the batch size (1..--max-batch) to the backlog and the "
            "per-image cost to keep latency near this many seconds.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _config(bootstrap: str, out: str, roots: tuple[str, ...], **kw: Any) -> cfg.WorkerConfig:
    resolved_roots = tuple(os.path.abspath(r) for r in roots) or (os.getcwd(),)
    return cfg.WorkerConfig(
        bootstrap=bootstrap, out_dir=os.path.abspath(out), roots=resolved_roots, **kw
    ).validate()


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR if verbose < 2 else logging.INFO)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """Streaming, micro-batching image processing on Kafka."""
    _setup_logging(verbose)


@cli.command()
@click.option("--port", type=int, default=None, help="Port (default: a free one).")
def broker(port: int | None) -> None:
    """Run the embedded broker in the foreground and print its bootstrap address."""
    from stream.broker import EmbeddedBroker

    b = EmbeddedBroker(port=port).start()
    click.echo(b.bootstrap, nl=True)
    sys.stdout.flush()
    click.echo(f"embedded broker on {b.bootstrap} (memory only); Ctrl-C to stop", err=True)
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop["now"] and b.alive():
            time.sleep(0.2)
    finally:
        b.stop()


@cli.command()
@click.argument("name", required=False)
def ops(name: str | None) -> None:
    """List the operations (or show one in detail)."""
    from stream.ops import build_registry

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


def _skip_reporter(where: str, why: str) -> None:
    click.echo(f"skipped {where}: {why}", err=True)


PARTITION_CHOICES = click.Choice(["sequential", "random", "source", "size", "phash", "parent"])
_CV_LIMIT = "OPENCV_IO_MAX_IMAGE_PIXELS"


def _tile_options(fn: F) -> F:
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


def _allow_big_sources() -> dict[str, str]:
    """Let this process decode huge images to tile them; the env for child workers."""
    child = dict(os.environ)
    if "stream._cv" not in sys.modules:  # OpenCV reads the limit once, at first use
        os.environ[_CV_LIMIT] = str(cfg.MAX_SOURCE_PIXELS)
    return child


def _expand(inputs: tuple[str, ...], source: str | None, partition_by: str) -> list[Any]:
    from producers.features import ENRICH
    from producers.files import Found, expand_inputs

    found = list(expand_inputs(inputs, int(time.time() * 1000), source, _skip_reporter))
    enrich = ENRICH.get(partition_by)
    if enrich is not None:
        found = [Found(enrich(f.ref), f.root) for f in found]
    return found


def _tiled(
    found: list[Any], tile: int | None, overlap: int, store: str, over: int | None
) -> tuple[list[Any], list[str]]:
    """Refs to produce (tiles in place of tiled images) and the tiled parents' ids."""
    if tile is None:
        return [f.ref for f in found], []
    from producers.tiles import expand_tiles

    if tile < 16:
        raise click.BadParameter("must be at least 16", param_hint="--tile")
    if overlap < 0 or overlap >= tile:
        raise click.BadParameter("must be between 0 and the tile size", param_hint="--overlap")
    refs, parents = [], []
    for item, tiles in expand_tiles(found, tile, overlap, store, over):
        if tiles is None:
            refs.append(item.ref)
        else:
            refs += tiles
            parents.append(item.ref.id)
    return refs, parents


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@_bootstrap
@click.option("--topic", envvar="IMGSTREAM_TOPIC", default=cfg.REFS_TOPIC, show_default=True)
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
@_tile_options
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
    type=click.Path(file_okay=False),
    default=None,
    help="Directory the tiles are written to (needed with --tile; workers need it under a --root).",
)
def produce(
    inputs: tuple[str, ...],
    bootstrap: str,
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
) -> None:
    """Produce refs for files, directories, globs and @manifests (optionally tiled)."""
    if watch:
        if tile is not None:
            raise click.UsageError("--watch and --tile cannot be combined")
        _watch(inputs, bootstrap, topic, partition_by, seed, source, partitions, state_path, settle)
        return
    if tile is not None:
        if tile_store is None:
            raise click.UsageError("--tile needs --tile-store DIR")
        _allow_big_sources()
    from tqdm import tqdm

    from producers.produce import produce_refs
    from stream.kafka_io import KafkaSink, ensure_topics
    from stream.partitioning import make_partitioner

    partitioner = make_partitioner(partition_by, seed)
    if partitions < 1:
        raise click.BadParameter("must be at least 1", param_hint="--partitions")
    found = _expand(inputs, source, partition_by)
    refs, parents = _tiled(
        found, tile, overlap if overlap is not None else 32, tile_store or "", tiles_for_over
    )
    ensure_topics(bootstrap, {topic: partitions})
    sink = KafkaSink(bootstrap, client_id="imgstream-produce")
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
    if report.failed:
        sys.exit(1)


def _watch(
    inputs: tuple[str, ...],
    bootstrap: str,
    topic: str,
    partition_by: str,
    seed: int | None,
    source: str | None,
    partitions: int,
    state_path: str,
    settle: float,
) -> None:
    """Produce each new, complete file in the directories once; until interrupted."""
    from producers.features import ENRICH
    from producers.files import ref_for_file
    from producers.watch import Settler, State, list_files
    from stream.codec import encode
    from stream.kafka_io import KafkaSink, ensure_topics
    from stream.partitioning import make_partitioner, partition_key

    dirs = [os.path.abspath(i) for i in inputs if os.path.isdir(i)]
    if not dirs:
        raise click.UsageError("--watch needs at least one directory to watch")
    if settle < 0:
        raise click.BadParameter("must not be negative", param_hint="--settle")
    partitioner = make_partitioner(partition_by, seed)
    enrich = ENRICH.get(partition_by)
    state = State(state_path)
    ensure_topics(bootstrap, {topic: partitions})
    sink = KafkaSink(bootstrap, client_id="imgstream-watch")
    n = sink.partitions(topic)
    settler = Settler(settle)
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    state_abs = os.path.abspath(state_path)
    click.echo(f"watching {', '.join(dirs)} (Ctrl-C to stop)", err=True)
    produced = 0
    try:
        while not stop["now"]:
            listing = {p: v for p, v in list_files(dirs).items() if p != state_abs}
            new = []
            for path in settler.ready(listing, time.monotonic()):
                try:
                    ref = ref_for_file(path, int(time.time() * 1000), source)
                except OSError:
                    continue
                if ref.id in state:
                    continue
                ref = enrich(ref) if enrich is not None else ref
                future = sink.send_partition(
                    topic, partitioner.partition(ref, n), partition_key(ref), encode(ref)
                )
                new.append((ref, future))
            if new:
                sink.flush()
                delivered = [r.id for r, f in new if f.succeeded()]
                state.add(delivered)
                produced += len(delivered)
                for ref, f in new:
                    mark = "produced" if f.succeeded() else "NOT delivered"
                    click.echo(f"{mark} {ref.id} {ref.uri}")
            time.sleep(0.25)
    finally:
        sink.close()
    click.echo(f"stopped watching; produced {produced} refs", err=True)


@cli.command()
@_bootstrap
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@_worker_options
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve Prometheus /metrics on this port (0: any free port).",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option(
    "--idle-exit",
    "idle_exit_s",
    type=float,
    default=None,
    help="Exit 0 after this many seconds with nothing received or in flight.",
)
def work(bootstrap: str, out: str, roots: tuple[str, ...], **kw: Any) -> None:
    """Consume refs as a group member: batch, process, store, emit records."""
    from consumers.worker import run_worker

    config = _config(bootstrap, out, roots, **kw)
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger().setLevel(logging.INFO)
    sys.exit(run_worker(config))


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option(
    "--bootstrap",
    envvar="IMGSTREAM_BOOTSTRAP",
    default=None,
    help="Use this Kafka cluster (default: start the embedded broker).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Worker processes [default: 1, whose --threads use every core; with --tile, one per "
    "core, since a worker holds one tile at a time].",
)
@click.option("--partitions", type=int, default=None, help="Refs partitions (default 2×workers).")
@click.option("--partition-by", type=PARTITION_CHOICES, default="sequential", show_default=True)
@click.option("--source", default=None, help="Source name (default: the parent folder's name).")
@click.option(
    "--stall-timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Give up after this many seconds without a new record.",
)
@click.option(
    "--tile-timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="A tiled image still incomplete after this many seconds is a failure.",
)
@_tile_options
@_worker_options
def run(
    inputs: tuple[str, ...],
    out: str,
    bootstrap: str | None,
    workers: int | None,
    partitions: int | None,
    partition_by: str,
    source: str | None,
    stall_timeout: float,
    tile_timeout: float,
    tile: int | None,
    overlap: int | None,
    tiles_for_over: int | None,
    roots: tuple[str, ...],
    group: str,
    **kw: Any,
) -> None:
    """Process INPUTs end to end: broker, producer, N workers, aggregator, summary."""
    child_env = _allow_big_sources() if tile is not None else None
    from tqdm import tqdm

    from consumers.launcher import JobPlan, new_group_name, run_job
    from stream.ops import build_registry
    from stream.partitioning import make_partitioner
    from stream.pipeline import parse_spec

    if workers is None:
        workers = max(1, os.cpu_count() or 1) if tile is not None else 1
    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    n_partitions = partitions if partitions is not None else 2 * workers
    if n_partitions < 1:
        raise click.BadParameter("must be at least 1", param_hint="--partitions")
    pipeline = parse_spec(kw["ops"], build_registry())  # fail before starting anything
    if tile is not None:
        need = pipeline.footprint()
        if need is None:
            raise click.BadParameter(
                f"{', '.join(pipeline.whole_image_steps())} needs the whole image and cannot "
                "run on tiles; drop --tile or use local operations",
                param_hint="--tile",
            )
        if overlap is None:
            overlap = need
        elif overlap < need:
            raise click.BadParameter(
                f"the pipeline reads {need} px around each pixel; the overlap must be at least "
                f"that (got {overlap})",
                param_hint="--overlap",
            )
    found = _expand(inputs, source, partition_by)
    if not found:
        raise click.UsageError("no input files found")
    out_dir = os.path.abspath(out)
    tile_store = os.path.join(out_dir, "tiles")
    refs, parents = _tiled(found, tile, overlap or 0, tile_store, tiles_for_over)
    auto_roots = {f.root for f in found if f.root is not None}
    if parents:
        auto_roots.add(tile_store)
    config = _config(
        bootstrap or "embedded",
        out,
        roots or tuple(sorted(auto_roots)),
        group=group if group != cfg.DEFAULT_GROUP else new_group_name(),
        **kw,
    )
    plan = JobPlan(refs, parents, os.path.join(out_dir, "results.db"), tile_timeout, child_env)
    total = len(refs) + len(parents)
    bar = tqdm(total=total, unit="img", disable=not sys.stderr.isatty(), desc="processing")
    try:
        summary = run_job(
            plan,
            config,
            workers,
            n_partitions,
            make_partitioner(partition_by),
            embedded=bootstrap is None,
            on_progress=bar.update,
            stall_timeout_s=stall_timeout,
        )
    finally:
        bar.close()
    for line in summary.lines():
        click.echo(line)
    click.echo(f"outputs     {os.path.join(config.out_dir, summary.pipeline_hash)}")
    click.echo(f"records     {os.path.join(config.out_dir, 'results.jsonl')}")
    click.echo(f"store       {plan.db_path}  (imgstream query --db {plan.db_path})")
    from stream.runner import peak_rss_mb

    click.echo(f"memory      this process peaked at {peak_rss_mb():.0f} MB; workers: see logs/")
    if summary.missing:
        shown = ", ".join(summary.missing[:10])
        click.echo(f"error: {len(summary.missing)} refs have no record: {shown}", err=True)
        sys.exit(1)


@cli.command()
@_bootstrap
@click.option("--group", default="imgstream-aggregate", show_default=True)
@click.option("--results-topic", default=cfg.RESULTS_TOPIC, show_default=True)
@click.option("--dlq-topic", default=cfg.DLQ_TOPIC, show_default=True)
@click.option(
    "--db", "db_path", required=True, type=click.Path(dir_okay=False), help="SQLite store."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Where fused outputs go (default: beside the tiles' outputs).",
)
@click.option("--tile-timeout", type=float, default=300.0, show_default=True)
@click.option(
    "--idle-exit",
    "idle_exit_s",
    type=float,
    default=None,
    help="Exit after this many seconds without a new record.",
)
def aggregate(
    bootstrap: str,
    group: str,
    results_topic: str,
    dlq_topic: str,
    db_path: str,
    out: str | None,
    tile_timeout: float,
    idle_exit_s: float | None,
) -> None:
    """Merge results into a queryable store, accumulate statistics, fuse tiles."""
    from consumers.aggregator import Aggregator, AggregatorLoop
    from stream.clock import SystemClock
    from stream.config import default_worker_id
    from stream.kafka_io import KafkaSink, KafkaSource, ensure_topics
    from stream.store import SQLiteStore

    ensure_topics(bootstrap, {results_topic: 4, dlq_topic: 1})
    store = SQLiteStore(db_path)
    sink = KafkaSink(bootstrap, client_id="imgstream-aggregate")
    agg = Aggregator(
        store,
        sink,
        results_topic,
        dlq_topic,
        SystemClock(),
        "aggregator-" + default_worker_id(),
        out,
        tile_timeout,
    )
    source = KafkaSource(bootstrap, group, [results_topic, dlq_topic], fetch_max_wait_ms=50)
    loop = AggregatorLoop(agg, source)

    def on_signal(signum: int, frame: Any) -> None:
        loop.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if idle_exit_s is not None:
        import threading

        def watchdog() -> None:
            last, seen = time.monotonic(), -1
            while not loop._stop.is_set():
                if loop.records != seen:
                    last, seen = time.monotonic(), loop.records
                elif time.monotonic() - last > idle_exit_s:
                    loop.stop()
                time.sleep(0.2)

        threading.Thread(target=watchdog, daemon=True).start()
    try:
        loop.run()
    finally:
        sink.close()
        store.close()
    click.echo(
        f"stored {loop.records} new records; stitched {agg.fused}; incomplete {agg.incomplete}"
    )


@cli.command()
@click.argument("video")
@_bootstrap
@click.option("--topic", envvar="IMGSTREAM_TOPIC", default=cfg.REFS_TOPIC, show_default=True)
@click.option("--fps", type=float, default=5.0, show_default=True, help="Frames per second kept.")
@click.option("--source", default=None, help="Source name (default: the file's stem, or camN).")
@click.option(
    "--store",
    "store_dir",
    type=click.Path(file_okay=False),
    default="captures",
    show_default=True,
    help="Where frames are stored (workers need it under --root).",
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
) -> None:
    """Capture frames from a video file, camera device (0, 1, ...) or stream URL."""
    from producers.capture import capture as run_capture
    from stream.clock import SystemClock
    from stream.codec import encode
    from stream.kafka_io import KafkaSink, ensure_topics
    from stream.partitioning import BySource, partition_key

    if fps <= 0:
        raise click.BadParameter("must be positive", param_hint="--fps")
    if source is None:
        source = f"cam{video}" if video.isdigit() else os.path.splitext(os.path.basename(video))[0]
    ensure_topics(bootstrap, {topic: partitions})
    sink = KafkaSink(bootstrap, client_id="imgstream-capture")
    n = sink.partitions(topic)
    partitioner = BySource()
    futures = []
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    from stream.metrics import Metrics

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
            os.path.abspath(store_dir),
            emit,
            SystemClock(),
            fps=fps,
            realtime=realtime,
            quality=quality,
            max_frames=max_frames,
            duration_s=duration_s,
            should_stop=lambda: stop["now"],
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
    if failed:
        sys.exit(1)


@cli.command()
@_bootstrap
@click.option("--from", "from_", required=True, help="Start of the range: ISO 8601 or epoch ms.")
@click.option("--to", "to", default=None, help="End of the range (exclusive); default: now.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@_worker_options
def replay(
    bootstrap: str,
    from_: str,
    to: str | None,
    out: str,
    roots: tuple[str, ...],
    group: str,
    **kw: Any,
) -> None:
    """Reprocess the refs produced in a time range, under a new consumer group."""
    from tqdm import tqdm

    from consumers.replay import replay as run_replay
    from stream.ops import build_registry
    from stream.pipeline import parse_spec

    from_ms = _time_ms(from_, "--from")
    to_ms = _time_ms(to, "--to")
    assert from_ms is not None
    if to_ms is not None and to_ms <= from_ms:
        raise click.BadParameter("must be after --from", param_hint="--to")
    pipeline = parse_spec(kw["ops"], build_registry())
    if group == cfg.DEFAULT_GROUP:
        group = (
            f"imgstream-replay-{pipeline.hash}-{from_ms}-{to_ms if to_ms is not None else 'end'}"
        )
    config = _config(bootstrap, out, roots, group=group, **kw)
    bar = tqdm(unit="msg", disable=not sys.stderr.isatty(), desc="replaying")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        summary = run_replay(config, from_ms, to_ms, progress)
    finally:
        bar.close()
    skipped = summary.batches
    summary.batches = 0
    for line in summary.lines()[1:-1]:
        click.echo(line)
    click.echo(f"replayed    {summary.expected} refs in range, {skipped} outside it; group {group}")
    click.echo(f"outputs     {os.path.join(config.out_dir, pipeline.hash)}")


@cli.command()
@_bootstrap
@click.option("--group", envvar="IMGSTREAM_GROUP", default=cfg.DEFAULT_GROUP, show_default=True)
@click.option("--topic", envvar="IMGSTREAM_TOPIC", default=cfg.REFS_TOPIC, show_default=True)
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
def status(bootstrap: str, group: str, topic: str, fmt: str, watch_s: float | None) -> None:
    """Per partition: committed offset, high-watermark, lag in messages and seconds."""
    import json as _json

    from stream.kafka_io import group_members, topic_state

    while True:
        states = topic_state(bootstrap, topic, group, pending_ts=True)
        members = group_members(bootstrap, group)
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
                    click.echo(f"  {m['member']}  {m['client']}")
        if watch_s is None:
            return
        time.sleep(watch_s)


@cli.group()
def offsets() -> None:
    """Inspect or move a consumer group's committed offsets."""


@offsets.command("reset")
@_bootstrap
@click.option("--group", required=True)
@click.option("--topic", envvar="IMGSTREAM_TOPIC", default=cfg.REFS_TOPIC, show_default=True)
@click.option("--to-time", default=None, help="The first offset at or after this time.")
@click.option("--to-earliest", is_flag=True)
@click.option("--to-latest", is_flag=True)
def offsets_reset(
    bootstrap: str, group: str, topic: str, to_time: str | None, to_earliest: bool, to_latest: bool
) -> None:
    """Reset a group's offsets (refused while the group has live members)."""
    from stream.kafka_io import commit_group_offsets, first_offsets_at, group_members, topic_state

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
    members = group_members(bootstrap, group)
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
    states = topic_state(bootstrap, topic)
    if to_earliest:
        target = {st.partition: 0 for st in states}
    elif to_latest:
        target = {st.partition: st.highwater for st in states}
    else:
        when = _time_ms(to_time, "--to-time")
        assert when is not None
        target = first_offsets_at(bootstrap, topic, when)
    commit_group_offsets(bootstrap, group, topic, target)
    for p, o in sorted(target.items()):
        click.echo(f"{topic}[{p}] -> {o}")


def _time_ms(text: str | None, flag: str) -> int | None:
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

    from stream.store import Query, SQLiteStore

    store = SQLiteStore(db_path)
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
            _time_ms(since, "--since"),
            _time_ms(until, "--until"),
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn imgstream errors into exit codes."""
    try:
        cli.main(args=argv, prog_name="imgstream", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except ImgstreamError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
