"""Capture frames from video files and live cameras, as refs.

A file is read with ``cv2.VideoCapture`` and sampled at ``fps`` by its
position in the video's own timeline (as fast as possible, or at its own
pace with ``realtime``); every sampled frame is stored. A live source (a
stream URL, a device) is a :class:`~imgstream.producers.video.cameras.Camera`,
read by :func:`run_camera` through a
:class:`~imgstream.producers.video.stream_reader.StreamReader` that survives
outages, and sampled at ``fps`` by wall-clock time (the cameras of a capture
run together in :mod:`~imgstream.producers.video.live`). Frames are stored by a
:class:`~imgstream.producers.video.frames.FrameWriter` (in a folder or under an
``s3://`` prefix) and emitted as refs keyed by the source, so one camera's
frames stay on one partition and in order; the emit function is shared by
every camera (one producer).

A live camera keeps either every sampled frame (``frames="all"``: its reader
waits while a frame is stored, so a slow store or broker delays the frames
after it, and a slow worker group lets a backlog grow on the refs topic) or
only its newest (``"latest"``, the default for live sources): the reader
never waits for storage, a sampled frame waits for the camera's writer
thread in a one-frame :class:`Slot` that a newer frame takes over, and a
camera whose workers are ``--max-lag`` behind drops its frames
(:mod:`~imgstream.producers.video.backlog`) until they catch up. Dropped frames are
counted, never queued.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imgstream._cv import cv2
from imgstream.clock import Clock
from imgstream.errors import ConfigError
from imgstream.io.stores import OutputSink
from imgstream.metrics import CameraHealth
from imgstream.producers.video.backlog import Backlog
from imgstream.producers.video.cameras import FRAME_MODES, Camera
from imgstream.producers.video.frames import FrameWriter
from imgstream.producers.video.stream_reader import StreamReader
from imgstream.schema.records import ImageRef

log = logging.getLogger("imgstream.capture")


#: Seconds between two warnings that a camera drops frames.
DROP_WARNING_EVERY_S = 60.0


@dataclass
class CaptureStats:
    """What a capture did (one source, or a sum of them)."""

    read: int = 0
    stored: int = 0
    #: Not kept by the fps sampler.
    skipped: int = 0
    #: Kept, but replaced by a newer frame or refused while the workers are behind.
    dropped: int = 0
    #: Not decoded, encoded, stored or sent.
    failed: int = 0
    reconnects: int = 0

    def add(self, other: CaptureStats) -> None:
        """Add ``other``'s counts to these."""
        for name in ("read", "stored", "skipped", "dropped", "failed", "reconnects"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


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
                stats.skipped += 1
                note("skipped")
                continue
            if writer.write(frame, ts, index - 1, {"video_s": round(t, 3)}) is None:
                stats.failed += 1
                note("failed")
                continue
            stats.stored += 1
            note("stored")
    finally:
        cap.release()
    return stats


@dataclass(frozen=True)
class Kept:
    """A sampled frame on its way to the writer: pixels, capture time, read index, meta."""

    image: Any
    ts: int
    index: int
    meta: dict[str, Any]


class Slot:
    """The newest kept frame of a camera waiting for its writer: one at most.

    :meth:`put` (the reader thread) never waits: a frame still waiting is
    replaced. :meth:`take` (the writer thread) waits for a frame.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Kept | None = None  # guarded by _cond
        self._closed = False

    def put(self, frame: Kept) -> bool:
        """Hand ``frame`` to the writer; True when it replaced one never written."""
        with self._cond:
            replaced = self._frame is not None
            self._frame = frame
            self._cond.notify()
            return replaced

    def take(self) -> Kept | None:
        """The waiting frame (wait for one); None once closed and empty."""
        with self._cond:
            while self._frame is None and not self._closed:
                self._cond.wait()
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        """No more frames: :meth:`take` returns what waits, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify()


class DropWarning:
    """Logs that a camera drops frames: at once, then at most every ``every_s`` (one thread)."""

    def __init__(self, camera: str, every_s: float = DROP_WARNING_EVERY_S) -> None:
        self.camera = camera
        self.every_s = every_s
        self._last: float | None = None
        self._since = 0  # frames dropped since the last warning

    def dropped(self, now: float, lag_s: float, backlog: Backlog) -> None:
        """A frame was dropped because the workers are ``lag_s`` behind."""
        self._since += 1
        if self._last is not None and now - self._last < self.every_s:
            return
        log.warning(
            "camera %s: the workers%s are %.1fs behind its frames (--max-lag %gs); "
            "dropping new frames until they catch up (%d dropped%s)",
            self.camera,
            f" of group {backlog.group!r}" if backlog.group else "",
            lag_s,
            backlog.max_lag_s,
            self._since,
            "" if self._last is None else f" in the last {now - self._last:.0f}s",
        )
        self._last = now
        self._since = 0


def run_camera(
    camera: Camera,
    reader: StreamReader,
    writer: FrameWriter,
    health: CameraHealth,
    clock: Clock,
    frames: str = "all",
    backlog: Backlog | None = None,
) -> CaptureStats:
    """Sample one camera's frames at its fps by wall-clock time until its reader stops.

    ``frames="all"`` stores and sends every sampled frame, in this thread;
    ``"latest"`` hands them to a writer thread through a :class:`Slot` and,
    with a ``backlog``, drops them while the workers are too far behind.
    """
    if frames not in FRAME_MODES:
        raise ConfigError(f"--frames must be one of {', '.join(FRAME_MODES)}, got {frames!r}")
    stats = CaptureStats()
    written = CaptureStats()  # the writer thread's counts (stored, failed)
    sampler = Sampler(camera.fps)
    started = clock.monotonic()
    slot: Slot | None = None
    thread: threading.Thread | None = None
    warning = DropWarning(camera.name)

    def write(kept: Kept, counts: CaptureStats) -> None:
        if writer.write(kept.image, kept.ts, kept.index, kept.meta) is None:
            counts.failed += 1
            health.count("failed")
        else:
            counts.stored += 1
            health.count("stored")

    if frames == "latest":
        slot = Slot()

        def drain(slot: Slot = slot) -> None:
            while (kept := slot.take()) is not None:
                try:
                    write(kept, written)
                except Exception:  # a bug: count the frame, keep the camera going
                    log.exception("camera %s: frame %d not stored", camera.name, kept.index)
                    written.failed += 1
                    health.count("failed")

        thread = threading.Thread(target=drain, name=f"camera-{camera.name}-writer", daemon=True)
        thread.start()
    gap: float | None = None  # an outage before frames that were not kept
    try:
        for frame in reader.frames():
            index = stats.read
            stats.read += 1
            gap = frame.gap_s if frame.gap_s is not None else gap
            if not sampler.keep(frame.mono - started):
                stats.skipped += 1
                health.frame("skipped")
                continue
            lag = None if backlog is None else backlog.too_far_behind(camera.name, frame.mono)
            if lag is not None and backlog is not None:
                stats.dropped += 1
                health.frame("dropped")
                warning.dropped(frame.mono, lag, backlog)
                continue
            image = frame.image()
            if image is None:
                stats.failed += 1
                health.frame("failed")
                continue
            meta = {} if gap is None else {"gap_s": round(gap, 3)}
            gap = None
            kept = Kept(image, frame.wall_ms, index, meta)
            if slot is None:
                health.seen()
                write(kept, stats)
            elif slot.put(kept):
                stats.dropped += 1
                health.frame("dropped")  # the frame it replaced
            else:
                health.seen()
    finally:
        if slot is not None and thread is not None:
            slot.close()  # the writer stores the frame that waits, then ends
            thread.join()
    stats.stored += written.stored
    stats.failed += written.failed
    stats.reconnects = reader.reconnects
    return stats
