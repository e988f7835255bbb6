"""The live cameras of a capture: one thread each, started, stopped and restarted by name.

:class:`CameraPool` runs each camera with :func:`~imgstream.producers.video.capture.run_camera`
in a thread of its own, with its own stop event, so one camera can be
stopped or restarted while the others go on untouched: their connections,
readers and frame counters are never touched by a change to another camera.
:func:`follow_cameras_file` applies a changed cameras file (or one SIGHUP
asked to read again) through :meth:`CameraPool.apply`: added cameras start,
removed ones stop, changed ones restart, the others are left alone; a file
that is not valid keeps the running cameras and is reported in one line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from imgstream.clock import Clock
from imgstream.errors import ConfigError
from imgstream.io.stores import Outputs, OutputSink
from imgstream.metrics import CameraMetrics
from imgstream.producers.video.backlog import Backlog
from imgstream.producers.video.cameras import Camera, CameraChanges, CamerasFile, diff_cameras
from imgstream.producers.video.capture import CaptureStats, run_camera
from imgstream.producers.video.frames import FrameWriter
from imgstream.producers.video.stream_reader import Backoff, StreamReader, Timeouts
from imgstream.schema.records import ImageRef

log = logging.getLogger("imgstream.capture")

#: Seconds between two looks at the cameras file.
WATCH_EVERY_S = 1.0


@dataclass(frozen=True)
class LiveOptions:
    """How live cameras are read: timeouts, reconnection back-off, which frames are kept."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    #: ``latest`` or ``all`` (see :mod:`~imgstream.producers.video.capture`).
    frames: str = "latest"

    @property
    def grace_s(self) -> float:
        """Seconds a camera may take to stop: it notices between frames, or when its
        open or read times out."""
        return self.timeouts.open_s + self.timeouts.read_s + 5.0


@dataclass
class _Running:
    """One camera's thread and the event that stops it."""

    camera: Camera
    stop: threading.Event
    thread: threading.Thread


class CameraPool:
    """The running cameras, by name.

    Ownership: ``_running`` belongs to the thread that calls :meth:`start`,
    :meth:`apply` and :meth:`stop_all` (the capture's main thread);
    ``results`` (each camera's counts, summed over its restarts) is written by
    the camera threads under ``_lock``.
    """

    def __init__(
        self,
        store_dir: str,
        emit: Callable[[ImageRef], None],
        metrics: CameraMetrics,
        clock: Clock,
        options: LiveOptions | None = None,
        outputs: OutputSink | None = None,
        backlog: Backlog | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.emit = emit
        self.metrics = metrics
        self.clock = clock
        self.options = options if options is not None else LiveOptions()
        self.outputs: OutputSink = outputs if outputs is not None else Outputs()
        self.backlog = backlog
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self.results: dict[str, CaptureStats] = {}

    def cameras(self) -> list[Camera]:
        """The cameras running now, in the order they started."""
        return [r.camera for r in self._running.values()]

    def start(self, camera: Camera) -> None:
        """Start capturing ``camera`` in a thread of its own."""
        opts = self.options
        stop = threading.Event()
        health = self.metrics.camera(camera.name, self.clock.monotonic)
        reader = StreamReader(
            camera.name,
            camera.url,
            self.clock,
            health,
            stop.is_set,
            stop.wait,
            opts.timeouts,
            Backoff(opts.backoff_initial_s, opts.backoff_max_s),
            secrets=camera.secrets(),
        )
        writer = FrameWriter(
            camera.name, self.store_dir, self.emit, camera.quality, camera.max_width, self.outputs
        )

        frames = camera.frames or opts.frames  # the cameras file's, else --frames
        backlog = self.backlog if frames == "latest" else None
        if self.backlog is not None:  # a reload may switch a camera either way
            if backlog is None:
                self.backlog.forget(camera.name)
            else:
                self.backlog.track(camera.name)

        def work() -> None:
            try:
                stats = run_camera(camera, reader, writer, health, self.clock, frames, backlog)
            except Exception:
                log.exception("camera %s: reader stopped by an unexpected error", camera.name)
                health.disconnected("error")
                return
            with self._lock:
                self.results.setdefault(camera.name, CaptureStats()).add(stats)

        thread = threading.Thread(target=work, name=f"camera-{camera.name}", daemon=True)
        self._running[camera.name] = _Running(camera, stop, thread)
        thread.start()

    def apply(self, cameras: list[Camera]) -> CameraChanges:
        """Run ``cameras``: start the added, stop the removed, restart the changed.

        The cameras that did not change keep running as they are. A changed
        camera's new thread starts once its old one has stopped (a camera may
        take one viewer only), or after the grace time.
        """
        changes = diff_cameras(self.cameras(), cameras)
        leaving = [self._running[c.name] for c in (*changes.removed, *changes.changed)]
        self._stop(leaving)
        for camera in changes.removed:
            self.metrics.forget(camera.name)
            if self.backlog is not None:
                self.backlog.forget(camera.name)
        for camera in (*changes.added, *changes.changed):
            self.start(camera)
        return changes

    def stop_all(self) -> dict[str, CaptureStats]:
        """Stop every camera; each camera's counts (of every run it had)."""
        self._stop(list(self._running.values()))
        with self._lock:
            return dict(self.results)

    def _stop(self, leaving: list[_Running]) -> None:
        """Stop these cameras together, waiting up to the grace time for their threads."""
        for running in leaving:
            running.stop.set()
        grace = self.options.grace_s
        deadline = self.clock.monotonic() + grace
        for running in leaving:
            running.thread.join(max(0.0, deadline - self.clock.monotonic()))
            if running.thread.is_alive():
                log.error("%s did not stop within %.0fs; leaving it", running.thread.name, grace)
            if self._running.get(running.camera.name) is running:
                del self._running[running.camera.name]


def reload_cameras(
    pool: CameraPool, file: CamerasFile, hide: Callable[[list[str]], None] = lambda s: None
) -> CameraChanges | None:
    """Read the cameras file again and apply it; None (logged in one line) when it is
    not valid, and the running cameras go on as they were.

    ``hide`` is given the new cameras' secrets before anything about them is logged.
    """
    before = pool.cameras()
    try:
        cameras = file.load()
    except ConfigError as exc:
        log.error("%s; still running the %d cameras of the last good file", exc, len(before))
        return None
    hide([s for c in cameras for s in c.secrets()])
    changes = pool.apply(cameras)
    if changes:
        log.info("cameras file %s: %s", file.path, changes.describe(before))
    else:
        log.info("cameras file %s: no camera changed", file.path)
    return changes


def follow_cameras_file(
    pool: CameraPool,
    file: CamerasFile,
    stop: threading.Event,
    reload: threading.Event,
    clock: Clock,
    duration_s: float | None = None,
    hide: Callable[[list[str]], None] = lambda s: None,
    every_s: float = WATCH_EVERY_S,
) -> None:
    """Until ``stop`` is set or ``duration_s`` passes: apply the cameras file when it
    has changed, or at once when ``reload`` is set (SIGHUP)."""
    until = None if duration_s is None else clock.monotonic() + duration_s
    while True:
        wait = every_s if until is None else min(every_s, until - clock.monotonic())
        if wait <= 0 or stop.wait(wait):
            return
        asked = reload.is_set()
        reload.clear()
        if asked or file.changed():
            reload_cameras(pool, file, hide)
