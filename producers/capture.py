"""Capture frames from video files and live cameras, as refs.

A file is read with ``cv2.VideoCapture`` and sampled at ``fps`` by its
position in the video's own timeline (as fast as possible, or at its own
pace with ``realtime``). Live sources (stream URLs, devices) are
:class:`~imgstream.producers.cameras.Camera` s, each read by its own thread
(:func:`run_cameras`) through a
:class:`~imgstream.producers.stream_reader.StreamReader` that survives
outages, and sampled at ``fps`` by wall-clock time. Frames are stored by a
:class:`~imgstream.producers.frames.FrameWriter` (in a folder or under an
``s3://`` prefix) and emitted as refs keyed by
the source, so one camera's frames stay on one partition and in order; the
emit function is shared by every camera (one producer).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from imgstream._cv import cv2
from imgstream.clock import Clock
from imgstream.errors import ConfigError
from imgstream.metrics import CameraHealth, CameraMetrics
from imgstream.producers.cameras import Camera
from imgstream.producers.frames import FrameWriter
from imgstream.producers.stream_reader import Backoff, StreamReader, Timeouts
from imgstream.records import ImageRef
from imgstream.stores import Outputs, OutputSink

log = logging.getLogger("imgstream.capture")


@dataclass
class CaptureStats:
    """What a capture did (one source)."""

    read: int = 0
    stored: int = 0
    dropped: int = 0
    reconnects: int = 0


def is_live(uri: str) -> bool:
    """A device index or a network stream (not a file)."""
    return uri.isdigit() or "://" in uri


class Sampler:
    """Keeps frames spaced at least 1/fps apart on a timeline (pure)."""

    def __init__(self, fps: float) -> None:
        if fps <= 0:
            raise ConfigError(f"--fps must be positive, got {fps}")
        self.interval = 1.0 / fps
        self._next: float | None = None

    def keep(self, t: float) -> bool:
        """True if the frame at time ``t`` (seconds) is to be kept."""
        if self._next is None or t + 1e-9 >= self._next:
            base = t if self._next is None else self._next
            # Skip whole intervals a slow source jumped over, so we do not burst.
            while base + self.interval <= t + 1e-9:
                base += self.interval
            self._next = base + self.interval
            return True
        return False


def capture(
    uri: str,
    source: str,
    store_dir: str,
    emit: Callable[[ImageRef], None],
    clock: Clock,
    fps: float = 5.0,
    realtime: bool = False,
    quality: int = 90,
    max_frames: int | None = None,
    duration_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_event: Callable[[str], None] | None = None,
    max_width: int | None = None,
    outputs: OutputSink | None = None,
) -> CaptureStats:
    """Read, sample, store and emit the frames of a video file until it ends or a limit is hit.

    ``store_dir`` is a folder or an ``s3://`` prefix (frames are uploaded there).
    """
    if is_live(uri):
        raise ConfigError(f"{uri!r} is a live source: capture it as a camera")
    if not os.path.isfile(uri):
        raise ConfigError(f"no such video file: {uri}")
    stats = CaptureStats()
    note = on_event if on_event is not None else (lambda event: None)
    sampler = Sampler(fps)
    writer = FrameWriter(source, store_dir, emit, quality, max_width, outputs)
    started_mono = clock.monotonic()
    started_wall = clock.wall_ms()
    cap = cv2.VideoCapture(uri)
    if not cap.isOpened():
        raise ConfigError(f"cannot open video file {uri!r}")
    video_fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    index = 0
    try:
        while not should_stop():
            if max_frames is not None and stats.stored >= max_frames:
                break
            if duration_s is not None and clock.monotonic() - started_mono >= duration_s:
                break
            ok, frame = cap.read()
            if not ok:
                break  # end of file
            stats.read += 1
            t = index / video_fps
            ts = started_wall + int(t * 1000)
            if realtime:
                ahead = t - (clock.monotonic() - started_mono)
                if ahead > 0:
                    time.sleep(ahead)
            index += 1
            if not sampler.keep(t):
                stats.dropped += 1
                note("skipped")
                continue
            if writer.write(frame, ts, index - 1, {"video_s": round(t, 3)}) is None:
                stats.dropped += 1
                note("failed")
                continue
            stats.stored += 1
            note("stored")
    finally:
        cap.release()
    return stats


def run_camera(
    camera: Camera, reader: StreamReader, writer: FrameWriter, health: CameraHealth, clock: Clock
) -> CaptureStats:
    """Sample one camera's frames at its fps by wall-clock time until its reader stops."""
    stats = CaptureStats()
    sampler = Sampler(camera.fps)
    started = clock.monotonic()
    for frame in reader.frames():
        index = stats.read
        stats.read += 1
        if not sampler.keep(frame.mono - started):
            stats.dropped += 1
            health.frame("skipped")
            continue
        meta = {} if frame.gap_s is None else {"gap_s": round(frame.gap_s, 3)}
        image = frame.image()
        if image is None or writer.write(image, frame.wall_ms, index, meta) is None:
            stats.dropped += 1
            health.frame("failed")
            continue
        stats.stored += 1
        health.frame("stored")
    stats.reconnects = reader.reconnects
    return stats


@dataclass(frozen=True)
class LiveOptions:
    """How live cameras are read: timeouts and reconnection back-off."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0


def run_cameras(
    cameras: list[Camera],
    store_dir: str,
    emit: Callable[[ImageRef], None],
    metrics: CameraMetrics,
    clock: Clock,
    stop: threading.Event,
    duration_s: float | None = None,
    options: LiveOptions | None = None,
    outputs: OutputSink | None = None,
) -> dict[str, CaptureStats]:
    """Capture every camera, one thread each, until ``stop`` is set or ``duration_s`` passes.

    A camera that fails is retried in its own thread and never holds up the
    others; a thread that dies of an unexpected error is logged and its
    camera marked disconnected. Returns each camera's stats.
    """
    opts = options if options is not None else LiveOptions()
    sink: OutputSink = outputs if outputs is not None else Outputs()
    results: dict[str, CaptureStats] = {}
    threads: list[threading.Thread] = []
    for camera in cameras:
        health = metrics.camera(camera.name, clock.monotonic)
        reader = StreamReader(
            camera.name,
            camera.url,
            clock,
            health,
            stop.is_set,
            stop.wait,
            opts.timeouts,
            Backoff(opts.backoff_initial_s, opts.backoff_max_s),
            secrets=camera.secrets(),
        )
        writer = FrameWriter(camera.name, store_dir, emit, camera.quality, camera.max_width, sink)

        def work(
            camera: Camera = camera,
            reader: StreamReader = reader,
            writer: FrameWriter = writer,
            health: CameraHealth = health,
        ) -> None:
            try:
                results[camera.name] = run_camera(camera, reader, writer, health, clock)
            except Exception:
                log.exception("camera %s: reader stopped by an unexpected error", camera.name)
                health.disconnected("error")

        thread = threading.Thread(target=work, name=f"camera-{camera.name}", daemon=True)
        thread.start()
        threads.append(thread)
    stop.wait(duration_s)
    stop.set()
    # A reader notices the stop between frames, or when its open or read times out.
    grace = opts.timeouts.open_s + opts.timeouts.read_s + 5.0
    deadline = clock.monotonic() + grace
    for thread in threads:
        thread.join(max(0.0, deadline - clock.monotonic()))
        if thread.is_alive():
            log.error("%s did not stop within %.0fs; leaving it", thread.name, grace)
    return results
