"""Prometheus metrics: every metric in one container, built on an injected registry.

The only module that imports ``prometheus_client``. Names use the
``imgstream_`` prefix and base units (seconds, bytes); counters end in
``_total``. Labels never hold ids or paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_PIXEL_BUCKETS = tuple(float(10**k) for k in range(4, 11))

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
        self.capture_frames = Counter(
            "imgstream_capture_frames_total",
            "Frames read by capture, by outcome (stored, skipped by --fps, failed).",
            ["outcome"],
            registry=r,
        )
        self.capture_reconnects = Counter(
            "imgstream_capture_reconnects_total",
            "Times capture reopened a live source that dropped.",
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
