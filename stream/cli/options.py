"""Shared options and helpers of the ``imgstream`` commands.

Configuration is resolved here, once: flags > ``IMGSTREAM_*`` environment >
defaults; a bad value stops the program at start-up with a message naming the flag.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from imgstream import config as cfg

F = Callable[..., Any]


bootstrap_option = click.option(
    "--bootstrap",
    envvar="IMGSTREAM_BOOTSTRAP",
    required=True,
    help="Kafka bootstrap servers host:port.",
)


def worker_options(fn: F) -> F:
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


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so a long-running command can finish cleanly."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def make_config(bootstrap: str, out: str, roots: tuple[str, ...], **kw: Any) -> cfg.WorkerConfig:
    resolved_roots = tuple(os.path.abspath(r) for r in roots) or (os.getcwd(),)
    return cfg.WorkerConfig(
        bootstrap=bootstrap, out_dir=os.path.abspath(out), roots=resolved_roots, **kw
    ).validate()


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR if verbose < 2 else logging.INFO)


def skip_reporter(where: str, why: str) -> None:
    click.echo(f"skipped {where}: {why}", err=True)


PARTITION_CHOICES = click.Choice(["sequential", "random", "source", "size", "phash", "parent"])
CV_LIMIT = "OPENCV_IO_MAX_IMAGE_PIXELS"


def tile_options(fn: F) -> F:
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


def allow_big_sources() -> dict[str, str]:
    """Let this process decode huge images to tile them; the env for child workers."""
    child = dict(os.environ)
    if "imgstream._cv" not in sys.modules:  # OpenCV reads the limit once, at first use
        os.environ[CV_LIMIT] = str(cfg.MAX_SOURCE_PIXELS)
    return child


def expand(inputs: tuple[str, ...], source: str | None, partition_by: str) -> list[Any]:
    from imgstream.producers.features import ENRICH
    from imgstream.producers.files import Found, expand_inputs

    found = list(expand_inputs(inputs, int(time.time() * 1000), source, skip_reporter))
    enrich = ENRICH.get(partition_by)
    if enrich is not None:
        found = [Found(enrich(f.ref), f.root) for f in found]
    return found


def tiled_refs(
    found: list[Any], tile: int | None, overlap: int, store: str, over: int | None
) -> tuple[list[Any], list[str]]:
    """Refs to produce (tiles in place of tiled images) and the tiled parents' ids."""
    if tile is None:
        return [f.ref for f in found], []
    from imgstream.producers.tiles import expand_tiles

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


def time_ms(text: str | None, flag: str) -> int | None:
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
