"""Commands that process refs: ``work``, ``run`` (the whole job) and ``replay``."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from imgstream import config as cfg
from imgstream.cli.app import cli
from imgstream.cli.options import (
    PARTITION_CHOICES,
    allow_big_sources,
    bootstrap_option,
    expand,
    make_config,
    tile_options,
    tiled_refs,
    time_ms,
    worker_options,
)


@cli.command()
@bootstrap_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@worker_options
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
    from imgstream.consumers.worker import run_worker

    config = make_config(bootstrap, out, roots, **kw)
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
@tile_options
@worker_options
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
    child_env = allow_big_sources() if tile is not None else None
    from tqdm import tqdm

    from imgstream.consumers.launcher import JobPlan, new_group_name, run_job
    from imgstream.ops import build_registry
    from imgstream.partitioning import make_partitioner
    from imgstream.pipeline import parse_spec

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
    found = expand(inputs, source, partition_by)
    if not found:
        raise click.UsageError("no input files found")
    out_dir = os.path.abspath(out)
    tile_store = os.path.join(out_dir, "tiles")
    refs, parents = tiled_refs(found, tile, overlap or 0, tile_store, tiles_for_over)
    auto_roots = {f.root for f in found if f.root is not None}
    if parents:
        auto_roots.add(tile_store)
    config = make_config(
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
    from imgstream.runner import peak_rss_mb

    click.echo(f"memory      this process peaked at {peak_rss_mb():.0f} MB; workers: see logs/")
    if summary.missing:
        shown = ", ".join(summary.missing[:10])
        click.echo(f"error: {len(summary.missing)} refs have no record: {shown}", err=True)
        sys.exit(1)


@cli.command()
@bootstrap_option
@click.option("--from", "from_", required=True, help="Start of the range: ISO 8601 or epoch ms.")
@click.option("--to", "to", default=None, help="End of the range (exclusive); default: now.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@worker_options
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

    from imgstream.consumers.replay import replay as run_replay
    from imgstream.ops import build_registry
    from imgstream.pipeline import parse_spec

    from_ms = time_ms(from_, "--from")
    to_ms = time_ms(to, "--to")
    assert from_ms is not None
    if to_ms is not None and to_ms <= from_ms:
        raise click.BadParameter("must be after --from", param_hint="--to")
    pipeline = parse_spec(kw["ops"], build_registry())
    if group == cfg.DEFAULT_GROUP:
        group = (
            f"imgstream-replay-{pipeline.hash}-{from_ms}-{to_ms if to_ms is not None else 'end'}"
        )
    config = make_config(bootstrap, out, roots, group=group, **kw)
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
    click.echo(f"outputs     {os.path.join(config.out_dir, pipeline.hash)}")
