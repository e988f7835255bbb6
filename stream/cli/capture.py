"""``capture``: frames of a video file, a live stream or a whole cameras file, as refs.

A file is read to its end; a live source (a URL or a device) and every
camera of ``--cameras`` are read until ``--duration`` passes or SIGTERM /
Ctrl-C, each in its own thread, reconnecting by themselves. All of them send
their refs through one producer. A live camera keeps its newest frames
(``--frames latest``): it drops what it cannot send at once and what the
workers (``--group``) would only get to ``--max-lag`` seconds late. The
cameras file is read again on SIGHUP and when it changes. Stream passwords
are kept out of logs and output.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from imgstream.cli.app import cli, hide_in_logs
from imgstream.cli.options import LOCATION, kafka_options, option_for, topic_options

if TYPE_CHECKING:  # kafka is imported only by the commands that talk to a broker
    from imgstream.kafka_io import ClientSettings
    from imgstream.schema.topics import TopicSettings

log = logging.getLogger("imgstream.capture")


@cli.command()
@click.argument("video", required=False)
@kafka_options
@topic_options
@option_for("refs_topic", "topic")
@click.option(
    "--cameras",
    "cameras_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="A TOML file of cameras ([defaults], [[camera]] name/url/fps/max_width/quality).",
)
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
@click.option(
    "--max-width",
    type=click.IntRange(16),
    default=None,
    help="Shrink wider frames to this width (aspect kept).",
)
@click.option(
    "--max-frames", type=int, default=None, help="Stop after storing this many frames (files)."
)
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
    "--open-timeout",
    "open_timeout_s",
    type=click.FloatRange(0.5),
    default=10.0,
    show_default=True,
    help="Seconds a live stream may take to open.",
)
@click.option(
    "--read-timeout",
    "read_timeout_s",
    type=click.FloatRange(0.5),
    default=5.0,
    show_default=True,
    help="Seconds without a frame before a live stream counts as stalled and is reopened.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Serve Prometheus /metrics (per-camera health) on this port (0: any free).",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address /metrics listens on."
)
@click.option(
    "--partitions",
    type=int,
    default=4,
    show_default=True,
    help="Partitions when the topic has to be created.",
)
@click.option(
    "--frames",
    type=click.Choice(["latest", "all"]),
    default=None,
    help="Live sources: keep only the newest frames when storing or the workers cannot "
    "keep up, dropping the rest (latest, the default), or queue every sampled frame (all). "
    "A file's frames are all kept. A camera's frames = ... in --cameras wins.",
)
@click.option(
    "--max-lag",
    "max_lag_s",
    type=click.FloatRange(0.1),
    default=2.0,
    show_default=True,
    help="With --frames latest: a camera drops new frames while the workers of --group are "
    "this many seconds behind it (its oldest unfinished frame has waited that long, or a "
    "frame sent now would, at their pace).",
)
@option_for("group", help="The workers' consumer group, whose progress --frames latest follows.")
def capture(
    video: str | None,
    bootstrap: str,
    kafka: ClientSettings,
    layout: TopicSettings,
    topic: str,
    cameras_path: str | None,
    fps: float,
    source: str | None,
    store_dir: str,
    quality: int,
    max_width: int | None,
    max_frames: int | None,
    duration_s: float | None,
    realtime: bool,
    open_timeout_s: float,
    read_timeout_s: float,
    metrics_port: int | None,
    metrics_host: str,
    partitions: int,
    frames: str | None,
    max_lag_s: float,
    group: str,
) -> int:
    """Capture frames from a video file, a camera device (0, 1, ...), a stream URL
    (rtsp://, http://, ...) or every camera of --cameras FILE (read again on SIGHUP
    and when it changes)."""
    from imgstream.cli.signals import stop_on_signals
    from imgstream.clock import SystemClock
    from imgstream.io.stores import Outputs, absolute
    from imgstream.kafka_io import KafkaSink, ensure_topics
    from imgstream.metrics import CameraMetrics
    from imgstream.partitioning import BySource, partition_key
    from imgstream.producers.produce import Undelivered
    from imgstream.producers.video import capture as cap
    from imgstream.producers.video import live
    from imgstream.producers.video.backlog import Backlog
    from imgstream.producers.video.cameras import Camera, CamerasFile, redact_url
    from imgstream.producers.video.following import Following
    from imgstream.producers.video.stream_reader import Timeouts
    from imgstream.schema.codec import encode

    if fps <= 0:
        raise click.BadParameter("must be positive", param_hint="--fps")
    if (video is None) == (cameras_path is None):
        raise click.UsageError("give a VIDEO (file, device or URL) or --cameras FILE, not both")
    cameras: list[Camera] = []
    name = source if source is not None or video is None else default_source(video)
    cameras_file = None
    if cameras_path is not None:
        cameras_file = CamerasFile(cameras_path, os.environ)
        cameras = cameras_file.load()
    elif video is not None and cap.is_live(video):
        cameras = [Camera(name or "cam", video, fps, max_width, quality)]
    if frames == "latest" and not cameras:
        raise click.UsageError(
            "--frames latest is for live sources: every sampled frame of a file is kept"
        )
    frames = frames or "latest"
    hide_in_logs([s for c in cameras for s in c.secrets()])
    if cameras and logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # Each failure is logged once with its reason: OpenCV's own warnings for the
        # same event (a timeout, "can't be used to capture by name") only add noise.
        from imgstream._cv import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    shown = redact_url(video) if video is not None else f"{len(cameras)} cameras"
    clock = SystemClock()
    store = absolute(store_dir)
    outputs = Outputs()  # one object-store client for every camera
    ensure_topics(bootstrap, {topic: partitions}, kafka, {topic: "refs"}, layout)
    sink = KafkaSink(bootstrap, "imgstream-capture", settings=kafka)
    n = sink.partitions(topic)
    partitioner = BySource()
    undelivered = Undelivered(clock.monotonic)
    stop = stop_on_signals()
    metrics = CameraMetrics()
    for camera in cameras:  # every camera on /metrics from the first scrape
        metrics.camera(camera.name, clock.monotonic)
    if metrics_port is not None:
        server, _thread = metrics.serve(metrics_port, metrics_host)
        log.info("metrics on http://%s:%d/metrics", metrics_host, server.server_port)
        click.echo(f"metrics on http://{metrics_host}:{server.server_port}/metrics", err=True)

    # A cameras file's ``frames`` wins over --frames, camera by camera; a reload may
    # switch one, so live sources always have a backlog (it tracks the latest ones).
    latest = [c.name for c in cameras if (c.frames or frames) == "latest"]
    backlog = Backlog(max_lag_s, group) if cameras else None

    def emit(ref: Any) -> None:
        partition = partitioner.partition(ref, n)
        now = clock.monotonic()
        sent = None
        if backlog is not None and backlog.tracks(ref.source or ""):
            sent = backlog.sent(ref.source or "", partition, now)
        try:
            future = sink.send_partition(topic, partition, partition_key(ref), encode(ref))
        except Exception:
            if sent is not None and backlog is not None:
                backlog.failed(sent)
            raise
        future.add_errback(undelivered.add)
        if sent is not None and backlog is not None:
            future.add_callback(lambda md, s=sent, b=backlog: b.acked(s, md.offset))
            future.add_errback(lambda exc, s=sent, b=backlog: b.failed(s))

    follow = Following(bootstrap, group, topic, n, kafka, backlog)
    reload = threading.Event()
    if cameras_file is not None:
        signal.signal(signal.SIGHUP, lambda signum, frame: reload.set())
    try:
        if cameras:
            options = live.LiveOptions(Timeouts(open_timeout_s, read_timeout_s), frames=frames)
            if latest:
                log.info(
                    "--frames latest: a camera drops new frames while group %r is %gs or more "
                    "behind it (--max-lag): %s",
                    group,
                    max_lag_s,
                    ", ".join(latest),
                )
            follow.start(clock.monotonic)
            pool = live.CameraPool(store, emit, metrics, clock, options, outputs, backlog)
            for camera in cameras:
                pool.start(camera)
            if cameras_file is None:
                stop.wait(duration_s)
            else:
                live.follow_cameras_file(
                    pool, cameras_file, stop, reload, clock, duration_s, hide_in_logs
                )
            per_camera = pool.stop_all()
            totals = cap.CaptureStats()
            for label, stats in per_camera.items():
                totals.add(stats)
                if cameras_path is not None:
                    click.echo(
                        f"  {label}: {stats.stored} frames stored ({stats.read} read, "
                        f"{stats.dropped} dropped, {stats.reconnects} reconnects)"
                    )
            if cameras_path is not None:
                shown = f"{len(per_camera)} cameras"
        else:
            assert video is not None and name is not None
            health = metrics.camera(name, clock.monotonic)
            totals = cap.capture(
                video,
                name,
                store,
                emit,
                clock,
                fps=fps,
                realtime=realtime,
                quality=quality,
                max_frames=max_frames,
                duration_s=duration_s,
                should_stop=stop.is_set,
                on_event=health.frame,
                max_width=max_width,
                outputs=outputs,
            )
        sink.flush()
    finally:
        follow.close()
        sink.close()
    failed = undelivered.count
    who = f" as {(cameras[0].name if cameras else name)!r}" if cameras_path is None else ""
    dropped = f"{totals.dropped} dropped (--frames latest), " if latest or totals.dropped else ""
    click.echo(
        f"captured {totals.stored} frames from {shown}{who} "
        f"({totals.read} read, {totals.skipped} skipped by --fps, {dropped}"
        f"{totals.failed} failed, {totals.reconnects} reconnects) -> {topic}"
        + (f"; {failed} NOT delivered" if failed else "")
    )
    return 1 if failed else 0


def default_source(video: str) -> str:
    """``camN`` for device N, else the stem of the file or URL path (``live`` for
    ``http://host/live.ts``)."""
    if video.isdigit():
        return f"cam{video}"
    path = urlsplit(video).path if "://" in video else video
    return os.path.splitext(os.path.basename(path.rstrip("/")))[0] or "cam"
