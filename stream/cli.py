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


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--bootstrap",
    envvar="IMGSTREAM_BOOTSTRAP",
    required=True,
    help="Kafka bootstrap servers host:port.",
)
@click.option("--topic", envvar="IMGSTREAM_TOPIC", default=cfg.REFS_TOPIC, show_default=True)
@click.option(
    "--partition-by",
    type=click.Choice(["sequential", "random", "source"]),
    default="sequential",
    show_default=True,
)
@click.option("--seed", type=int, default=None, help="Seed for --partition-by random.")
@click.option("--source", default=None, help="Source name (default: the parent folder's name).")
@click.option(
    "--partitions",
    type=int,
    default=4,
    show_default=True,
    help="Partitions when the topic has to be created.",
)
def produce(
    inputs: tuple[str, ...],
    bootstrap: str,
    topic: str,
    partition_by: str,
    seed: int | None,
    source: str | None,
    partitions: int,
) -> None:
    """Produce refs for files, directories, globs and @manifests."""
    from tqdm import tqdm

    from producers.files import expand_inputs
    from producers.produce import produce_refs
    from stream.kafka_io import KafkaSink, ensure_topics
    from stream.partitioning import make_partitioner

    partitioner = make_partitioner(partition_by, seed)
    if partitions < 1:
        raise click.BadParameter("must be at least 1", param_hint="--partitions")
    ensure_topics(bootstrap, {topic: partitions})
    now = int(time.time() * 1000)
    refs = (f.ref for f in expand_inputs(inputs, now, source, _skip_reporter))
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
        + (f"; {report.failed} NOT delivered" if report.failed else "")
    )
    if report.failed:
        sys.exit(1)


@cli.command()
@click.option(
    "--bootstrap",
    envvar="IMGSTREAM_BOOTSTRAP",
    required=True,
    help="Kafka bootstrap servers host:port.",
)
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
    default=1,
    show_default=True,
    help="Worker processes (one process with --threads already uses every core).",
)
@click.option("--partitions", type=int, default=None, help="Refs partitions (default 2×workers).")
@click.option(
    "--partition-by",
    type=click.Choice(["sequential", "random", "source"]),
    default="sequential",
    show_default=True,
)
@click.option("--source", default=None, help="Source name (default: the parent folder's name).")
@click.option(
    "--stall-timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Give up after this many seconds without a new record.",
)
@_worker_options
def run(
    inputs: tuple[str, ...],
    out: str,
    bootstrap: str | None,
    workers: int,
    partitions: int | None,
    partition_by: str,
    source: str | None,
    stall_timeout: float,
    roots: tuple[str, ...],
    group: str,
    **kw: Any,
) -> None:
    """Process INPUTs end to end: broker, producer, N workers, summary."""
    from tqdm import tqdm

    from consumers.launcher import new_group_name, run_job
    from producers.files import expand_inputs
    from stream.ops import build_registry
    from stream.partitioning import make_partitioner
    from stream.pipeline import parse_spec

    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    n_partitions = partitions if partitions is not None else 2 * workers
    if n_partitions < 1:
        raise click.BadParameter("must be at least 1", param_hint="--partitions")
    parse_spec(kw["ops"], build_registry())  # fail before starting anything
    now = int(time.time() * 1000)
    found = list(expand_inputs(inputs, now, source, _skip_reporter))
    if not found:
        raise click.UsageError("no input files found")
    auto_roots = tuple(sorted({f.root for f in found if f.root is not None}))
    config = _config(
        bootstrap or "embedded",
        out,
        roots or auto_roots,
        group=group if group != cfg.DEFAULT_GROUP else new_group_name(),
        **kw,
    )
    bar = tqdm(total=len(found), unit="img", disable=not sys.stderr.isatty(), desc="processing")
    try:
        summary = run_job(
            found,
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
    if summary.missing:
        shown = ", ".join(summary.missing[:10])
        click.echo(f"error: {len(summary.missing)} refs have no record: {shown}", err=True)
        sys.exit(1)


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
