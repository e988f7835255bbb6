"""Commands that process refs: ``work``, ``run`` (the whole job) and ``replay``."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time

import click

from imgstream.cli.app import cli
from imgstream.cli.options import (
    PARTITION_CHOICES,
    WORK_ONLY,
    skip_reporter,
    tile_options,
    time_ms,
    worker_options,
)
from imgstream.config import WorkerConfig
from imgstream.consumers.processes import HOLD_ENV
from imgstream.errors import ConfigError, UnreliableTransactions
from imgstream.io.stores import join, local_dir

#: ``run``'s default ``--target-latency`` (seconds).
RUN_TARGET_LATENCY_S = 1.0


def _given(name: str) -> bool:
    """Whether the user set option ``name`` (by flag or environment), not its default."""
    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, click.core.ParameterSource.DEFAULT)


@cli.command()
@worker_options()
def work(config: WorkerConfig) -> int:
    """Consume refs as a group member: batch, process, store, emit records."""
    from imgstream.consumers.worker import run_worker

    config.validate()
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger().setLevel(logging.INFO)
    held_s = 0.0
    if os.environ.get(HOLD_ENV):  # started early by `imgstream run`: wait for its go
        from imgstream.consumers.processes import wait_for_release

        held = time.monotonic()
        if not wait_for_release():
            return 0
        held_s = time.monotonic() - held
    return run_worker(config, held_s)


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
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
@tile_options
@worker_options(
    exclude=WORK_ONLY,
    overrides={
        "bootstrap": {
            "required": False,
            "default": None,
            "help": "Use this Kafka cluster (default: start the embedded broker).",
        }
    },
)
def run(
    inputs: tuple[str, ...],
    workers: int | None,
    partitions: int | None,
    partition_by: str,
    source: str | None,
    stall_timeout: float,
    tile_timeout: float,
    tile: int | None,
    overlap: int | None,
    tiles_for_over: int | None,
    config: WorkerConfig,
) -> int:
    """Process INPUTs end to end: broker, producer, N workers, aggregator, summary."""
    from tqdm import tqdm

    from imgstream.consumers.processes import new_group_name, reads_directly, start_early
    from imgstream.ops import build_registry
    from imgstream.ops.pipeline import parse_spec
    from imgstream.partitioning import make_partitioner
    from imgstream.producers.inputs import collect_inputs, tiled_refs

    if workers is None:
        workers = max(1, os.cpu_count() or 1) if tile is not None else 1
    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    n_partitions = partitions if partitions is not None else 2 * workers
    if n_partitions < 1:
        raise click.BadParameter("must be at least 1", param_hint="--partitions")
    pipeline = parse_spec(config.ops, build_registry())  # fail before starting anything
    if pipeline.stateful and partition_by != "source":
        # A source's frames must meet in one partition, in order, for its state.
        if _given("partition_by"):
            raise click.BadParameter(
                "a stateful pipeline runs each source's frames in order: use --partition-by source",
                param_hint="--partition-by",
            )
        partition_by = "source"
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
    embedded = not config.bootstrap
    if embedded and config.kafka_config:
        _refuse_secure_embedded(config.kafka_config)
    if embedded and config.exactly_once:
        raise UnreliableTransactions(
            "--exactly-once needs --bootstrap with Apache Kafka: the embedded broker's "
            "transactions are unreliable"
        )
    # validated before the inputs are read: a bad flag is reported at once
    dataclasses.replace(config, bootstrap=config.bootstrap or "embedded").validate()
    found = collect_inputs(inputs, source, partition_by, skip_reporter)
    if not found:
        raise click.UsageError("no input files found")
    tile_store = join(config.out_dir, "tiles")
    run_dir = local_dir(config.out_dir)
    refs, parents = tiled_refs(found, tile, overlap or 0, tile_store, tiles_for_over)
    auto_roots = {f.root for f in found if f.root is not None}
    if parents:
        auto_roots.add(tile_store)
    config = dataclasses.replace(
        config,
        bootstrap=config.bootstrap or "embedded",
        roots=config.roots if _given("roots") else tuple(sorted(auto_roots)),
        group=config.group if _given("group") else new_group_name(),
        # A run's refs are all known: a batch need not wait --max-wait for more
        # when the backlog is smaller than a batch (adaptive batching, see work).
        target_latency_s=config.target_latency_s
        if _given("target_latency_s")
        else RUN_TARGET_LATENCY_S,
    ).validate()
    early = None
    if embedded:  # the workers load their modules while this process starts the broker
        direct = reads_directly(not _given("group"), workers, config.exactly_once)
        config, early = start_early(config, workers, n_partitions, direct)
    from imgstream.consumers.launcher import JobPlan, run_job

    plan = JobPlan(refs, parents, os.path.join(run_dir, "results.db"), tile_timeout)
    total = len(refs) + len(parents)
    bar = tqdm(total=total, unit="img", disable=not sys.stderr.isatty(), desc="processing")
    try:
        summary = run_job(
            plan,
            config,
            workers,
            n_partitions,
            make_partitioner(partition_by),
            embedded=embedded,
            on_progress=bar.update,
            stall_timeout_s=stall_timeout,
            exclusive=not _given("group"),
            early=early,
        )
    finally:
        bar.close()
    for line in summary.lines():
        click.echo(line)
    click.echo(f"outputs     {join(config.out_dir, summary.pipeline_hash)}")
    click.echo(f"records     {os.path.join(run_dir, 'results.jsonl')}")
    click.echo(f"store       {plan.db_path}  (imgstream query --db {plan.db_path})")
    from imgstream.memory import peak_rss_mb

    click.echo(f"memory      this process peaked at {peak_rss_mb():.0f} MB; workers: see logs/")
    if summary.missing:
        shown = ", ".join(summary.missing[:10])
        click.echo(f"error: {len(summary.missing)} refs have no record: {shown}", err=True)
        return 1
    return 0


def _refuse_secure_embedded(path: str) -> None:
    """The embedded broker speaks PLAINTEXT only: a secured client could never reach it."""
    from imgstream.cli.options import load_kafka_config

    protocol = load_kafka_config(path).properties.get("security_protocol", "PLAINTEXT")
    if protocol != "PLAINTEXT":
        raise ConfigError(
            f"--kafka-config {path}: security.protocol={protocol} needs --bootstrap (or "
            "bootstrap.servers): the embedded broker speaks PLAINTEXT only"
        )


@cli.command()
@click.option("--from", "from_", required=True, help="Start of the range: ISO 8601 or epoch ms.")
@click.option("--to", "to", default=None, help="End of the range (exclusive); default: now.")
@worker_options(exclude=WORK_ONLY)
def replay(from_: str, to: str | None, config: WorkerConfig) -> None:
    """Reprocess the refs produced in a time range, under a new consumer group."""
    from tqdm import tqdm

    from imgstream.consumers.replay import replay as run_replay
    from imgstream.kafka_io import wait_for_broker, worker_settings
    from imgstream.ops import build_registry
    from imgstream.ops.pipeline import parse_spec

    from_ms = time_ms(from_, "--from")
    to_ms = time_ms(to, "--to")
    assert from_ms is not None
    if to_ms is not None and to_ms <= from_ms:
        raise click.BadParameter("must be after --from", param_hint="--to")
    config.validate()
    pipeline = parse_spec(config.ops, build_registry())
    if not _given("group"):
        end = to_ms if to_ms is not None else "end"
        config = dataclasses.replace(
            config, group=f"imgstream-replay-{pipeline.hash}-{from_ms}-{end}"
        )
    group = config.group
    # fail within --connect-timeout, before the replay's own clients are made
    wait_for_broker(config.bootstrap, config.connect_timeout_s, worker_settings(config))
    bar = tqdm(unit="msg", disable=not sys.stderr.isatty(), desc="replaying")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        summary = run_replay(config, from_ms, to_ms, progress)
    finally:
        bar.close()
    for line in summary.lines()[1:-1]:
        click.echo(line)
    click.echo(
        f"replayed    {summary.expected} refs in range, {summary.skipped} outside it; group {group}"
    )
    click.echo(f"outputs     {join(config.out_dir, pipeline.hash)}")
