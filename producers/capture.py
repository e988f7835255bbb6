"""Capture frames from a video file, a camera device or a stream URL, as refs.

Frames are read with ``cv2.VideoCapture``, sampled at ``fps`` (by their
position in the video's own timeline), stored as JPEG under
``{store}/{source}/`` (a folder or an ``s3://`` prefix), and produced as
refs keyed by the source, so one camera's frames stay on one partition and
in order. A file is read as fast
as possible, or at its own pace with ``realtime``; a live source (a device or
a URL) keeps its real pace and is reopened with exponential back-off when it
drops. Counts of stored and dropped frames and of reconnects are kept.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from imgstream._cv import cv2
from imgstream.clock import Clock
from imgstream.errors import ConfigError
from imgstream.records import ImageRef
from imgstream.storage import safe_name
from imgstream.stores import Outputs, OutputSink, absolute, join

log = logging.getLogger("imgstream.capture")


@dataclass
class CaptureStats:
    """What a capture did."""

    read: int = 0
    stored: int = 0
    dropped: int = 0
    reconnects: int = 0


def is_live(uri: str) -> bool:
    """A device index or a network stream (not a file)."""
    return uri.isdigit() or "://" in uri


def open_capture(uri: str) -> cv2.VideoCapture:
    """A VideoCapture for a device index, a URL or a file path."""
    return cv2.VideoCapture(int(uri) if uri.isdigit() else uri)


class Sampler:
    """Keeps frames spaced at least 1/fps apart on the video timeline (pure)."""

    def __init__(self, fps: float) -> None:
        if fps <= 0:
            raise ConfigError(f"--fps must be positive, got {fps}")
        self.interval = 1.0 / fps
        self._next: float | None = None

    def keep(self, t: float) -> bool:
        """True if the frame at video time ``t`` (seconds) is to be kept."""
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
    max_reconnects: int = 10,
    on_event: Callable[[str], None] | None = None,
    outputs: OutputSink | None = None,
) -> CaptureStats:
    """Read, sample, store and emit frames until the source ends or a limit is hit.

    ``store_dir`` is a folder or an ``s3://`` prefix (frames are uploaded there).
    """
    live = is_live(uri)
    if not live and not os.path.isfile(uri):
        raise ConfigError(f"no such video file: {uri}")
    stats = CaptureStats()
    note = on_event if on_event is not None else (lambda event: None)
    sampler = Sampler(fps)
    folder = join(store_dir, safe_name(source))
    sink: OutputSink = outputs if outputs is not None else Outputs()
    started_mono = clock.monotonic()
    started_wall = clock.wall_ms()
    cap = open_capture(uri)
    if not cap.isOpened():
        raise ConfigError(f"cannot open video source {uri!r}")
    video_fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    backoff = 0.5
    index = 0
    try:
        while not should_stop():
            if max_frames is not None and stats.stored >= max_frames:
                break
            elapsed = clock.monotonic() - started_mono
            if duration_s is not None and elapsed >= duration_s:
                break
            ok, frame = cap.read()
            if not ok:
                if not live:
                    break  # end of file
                stats.reconnects += 1
                note("reconnect")
                if stats.reconnects > max_reconnects:
                    log.error("source %s did not come back after %d tries", uri, max_reconnects)
                    break
                log.warning("source %s dropped; reconnecting in %.1fs", uri, backoff)
                cap.release()
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                cap = open_capture(uri)
                continue
            backoff = 0.5
            stats.read += 1
            if live:
                t = clock.monotonic() - started_mono
                ts = clock.wall_ms()
            else:
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
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                stats.dropped += 1
                note("failed")
                continue
            name = f"{ts}-{index - 1:08d}"
            path = absolute(join(folder, name + ".jpg"))
            sink.write(path, bytes(buf))
            emit(
                ImageRef(
                    id=f"{safe_name(source)}-{name}",
                    uri=path,
                    ts=ts,
                    source=source,
                    meta={"frame": index - 1, "video_s": round(t, 3)},
                )
            )
            stats.stored += 1
            note("stored")
    finally:
        cap.release()
    return stats
