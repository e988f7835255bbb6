"""Prometheus metrics: every metric in one container, built on an injected registry.

The only module that imports ``prometheus_client``. Names use the
``imgstream_`` prefix and base units (seconds, bytes); counters end in
``_total``. Labels never hold ids or paths.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.parser import text_string_to_metric_families

_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_PIXEL_BUCKETS = tuple(float(10**k) for k in range(4, 11))
_OUTAGE_BUCKETS = (1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

#: Outcomes of a frame read by capture: stored (and its ref sent), skipped by fps,
#: dropped (``--frames latest``: a newer frame took its place, or the workers are
#: behind), failed (not decoded, encoded or stored).
FRAME_OUTCOMES = ("stored", "skipped", "dropped", "failed")

STAGES = ("wait", "load", "decode", "ops", "encode", "store")


class Metrics:
    """The worker's metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.images = Counter(
            "imgstream_images_total",
            "Images processed, by status (ok, failed).",
            ["status"],
            registry=r,
        )
        self.bytes_in = Counter(
            "imgstream_input_bytes_total", "Bytes of input images read.", registry=r
        )
        self.bytes_out = Counter(
            "imgstream_output_bytes_total", "Bytes of output images written.", registry=r
        )
        self.failures = Counter(
            "imgstream_failures_total",
            "Failure records emitted, by error type.",
            ["type"],
            registry=r,
        )
        self.batches = Counter(
            "imgstream_batches_total",
            "Batches processed, by close reason.",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "imgstream_batch_size_images", "Images per batch.", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_pixels = Histogram(
            "imgstream_batch_pixels",
            "Decoded pixels per batch.",
            buckets=_PIXEL_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "imgstream_stage_seconds",
            "Seconds per image in each stage (wait, load, decode, ops, encode, store).",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "imgstream_batch_processing_seconds",
            "Seconds to process one batch.",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "imgstream_end_to_end_latency_seconds",
            "Seconds from a ref's ts to its result being sent.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "imgstream_consumer_lag_messages",
            "Messages between the committed offset and the high-watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "imgstream_consumer_lag_seconds",
            "Age of the oldest ref not yet committed (0 when caught up).",
            ["topic", "partition"],
            registry=r,
        )
        self.rebalances = Counter(
            "imgstream_rebalances_total",
            "Partition revocations and assignments seen.",
            ["event"],
            registry=r,
        )
        self.in_flight = Gauge(
            "imgstream_in_flight_images", "Images consumed and not yet committed.", registry=r
        )
        self.paused = Gauge(
            "imgstream_fetch_paused", "1 while fetching is paused by back-pressure.", registry=r
        )
        self.commits = Counter(
            "imgstream_commits_total", "Offset commits, by outcome.", ["outcome"], registry=r
        )
        self.timeouts = Counter(
            "imgstream_image_timeouts_total",
            "Images abandoned after --image-timeout (recorded as timeout failures).",
            registry=r,
        )
        self.stale = Counter(
            "imgstream_stale_refs_total",
            "Refs skipped because they were older than --max-age.",
            registry=r,
        )
        self.batch_target = Gauge(
            "imgstream_batch_target_images",
            "The batch size adaptive batching currently aims for.",
            registry=r,
        )
        self.producer_restarts = Counter(
            "imgstream_producer_restarts_total",
            "Times the record producer was recreated after a delivery failure.",
            registry=r,
        )
        self.sink_blocked = Gauge(
            "imgstream_sink_blocked",
            "1 while the output store refuses writes (work is paused and retried).",
            registry=r,
        )
        self.stuck_threads = Gauge(
            "imgstream_stuck_image_threads",
            "Image threads abandoned after --image-timeout that have not returned.",
            registry=r,
        )
        self.state_bytes = Gauge(
            "imgstream_state_snapshot_bytes",
            "Bytes of per-source state written by the last snapshot (stateful pipelines).",
            registry=r,
        )
        self.state_restore = Histogram(
            "imgstream_state_restore_seconds",
            "Time to read back and apply the per-source states of newly assigned partitions.",
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        for status in ("ok", "failed"):
            self.images.labels(status=status)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        for event in ("assigned", "revoked"):
            self.rebalances.labels(event=event)

    def observe_stages(self, timings: Mapping[str, float]) -> None:
        """Record per-stage seconds of one image."""
        for stage, seconds in timings.items():
            if stage in STAGES:
                self.stage_seconds.labels(stage=stage).observe(seconds)

    def exposition(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` on host:port in a daemon thread; returns the server."""
        return start_http_server(port, addr=host, registry=self.registry)


class CameraMetrics:
    """Capture's per-camera health, labelled ``camera`` (names from the config, so bounded).

    :meth:`camera` gives one camera's :class:`CameraHealth`, which its reader
    thread updates; prometheus_client's metrics are thread-safe.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._cameras: dict[str, CameraHealth] = {}
        self._lock = threading.Lock()
        r = self.registry
        self.connected = Gauge(
            "imgstream_camera_connected",
            "1 while the camera's stream is open.",
            ["camera"],
            registry=r,
        )
        self.frames = Counter(
            "imgstream_camera_frames_total",
            "Frames read from a camera, by outcome (stored, skipped by fps, dropped by "
            "--frames latest, failed).",
            ["camera", "outcome"],
            registry=r,
        )
        self.reconnects = Counter(
            "imgstream_camera_reconnects_total",
            "Attempts to reopen a camera's stream after it failed.",
            ["camera"],
            registry=r,
        )
        self.last_frame_age = Gauge(
            "imgstream_camera_last_frame_age_seconds",
            "Seconds since the camera's last frame (since capture started, before the first).",
            ["camera"],
            registry=r,
        )
        self.width = Gauge(
            "imgstream_camera_width_pixels", "Width of the camera's frames.", ["camera"], registry=r
        )
        self.height = Gauge(
            "imgstream_camera_height_pixels",
            "Height of the camera's frames.",
            ["camera"],
            registry=r,
        )
        self.outages = Histogram(
            "imgstream_camera_outage_seconds",
            "Seconds a camera gave no frames, observed when its frames came back.",
            ["camera"],
            buckets=_OUTAGE_BUCKETS,
            registry=r,
        )

    def camera(self, name: str, now: Callable[[], float]) -> CameraHealth:
        """The health of camera ``name`` (made once, its series at zero); ``now`` is monotonic."""
        with self._lock:
            if name not in self._cameras:
                self._cameras[name] = CameraHealth(self, name, now)
            return self._cameras[name]

    def forget(self, name: str) -> None:
        """Remove camera ``name`` and its series (it left the cameras file)."""
        with self._lock:
            if self._cameras.pop(name, None) is None:
                return
            series = (self.connected, self.reconnects, self.last_frame_age, self.width)
            for metric in (*series, self.height, self.outages):
                metric.remove(name)
            for outcome in FRAME_OUTCOMES:
                self.frames.remove(name, outcome)

    def exposition(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        """Serve ``/metrics`` on host:port in a daemon thread; returns the server."""
        return start_http_server(port, addr=host, registry=self.registry)


class CameraHealth:
    """One camera's series; updated by its reader thread, and by its writer thread
    (:meth:`count` only) under ``--frames latest``."""

    def __init__(self, metrics: CameraMetrics, name: str, now: Callable[[], float]) -> None:
        self._m = metrics
        self.name = name
        self._now = now
        self._last = now()  # the last frame, or the start; owned by the reader thread
        metrics.connected.labels(camera=name).set(0)
        for outcome in FRAME_OUTCOMES:
            metrics.frames.labels(camera=name, outcome=outcome)
        metrics.reconnects.labels(camera=name)
        metrics.width.labels(camera=name)
        metrics.height.labels(camera=name)
        metrics.outages.labels(camera=name)
        metrics.last_frame_age.labels(camera=name).set_function(lambda: self._now() - self._last)

    def connected(self, width: int, height: int) -> None:
        """The stream is open."""
        self._m.connected.labels(camera=self.name).set(1)
        self._m.width.labels(camera=self.name).set(width)
        self._m.height.labels(camera=self.name).set(height)

    def disconnected(self, reason: str) -> None:
        """The stream failed (the reason is logged by the reader, not a label)."""
        self._m.connected.labels(camera=self.name).set(0)

    def reconnecting(self) -> None:
        """Another attempt to open the stream."""
        self._m.reconnects.labels(camera=self.name).inc()

    def gap(self, seconds: float) -> None:
        """Frames are back after ``seconds``."""
        self._m.outages.labels(camera=self.name).observe(seconds)

    def frame(self, outcome: str) -> None:
        """A frame was read (reader thread) with this outcome: ``stored``, ``skipped``
        (by fps), ``dropped`` or ``failed``."""
        self.seen()
        self.count(outcome)

    def seen(self) -> None:
        """A frame was read (reader thread); its outcome is counted later."""
        self._last = self._now()

    def count(self, outcome: str) -> None:
        """Count a frame's outcome, decided after it was read (any thread)."""
        self._m.frames.labels(camera=self.name, outcome=outcome).inc()


def camera_health(exposition: str) -> dict[str, dict[str, float]]:
    """Per camera, its series from a capture's /metrics text (for ``status``).

    Keys: ``connected``, ``stored``, ``skipped``, ``failed``, ``reconnects``,
    ``last_frame_age_seconds``, ``width``, ``height``, ``outages``, ``outage_seconds``.
    """
    names = {
        "imgstream_camera_connected": "connected",
        "imgstream_camera_reconnects_total": "reconnects",
        "imgstream_camera_last_frame_age_seconds": "last_frame_age_seconds",
        "imgstream_camera_width_pixels": "width",
        "imgstream_camera_height_pixels": "height",
        "imgstream_camera_outage_seconds_count": "outages",
        "imgstream_camera_outage_seconds_sum": "outage_seconds",
    }
    cameras: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            camera = sample.labels.get("camera")
            if camera is None or math.isnan(sample.value):
                continue
            if sample.name == "imgstream_camera_frames_total":
                key = sample.labels.get("outcome", "")
            else:
                key = names.get(sample.name, "")
            if key:
                cameras.setdefault(camera, {})[key] = sample.value
    return cameras
