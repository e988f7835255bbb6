"""The worker's configuration: one frozen object, validated at start-up.

Built once at the edge (:mod:`imgstream.cli`: flags > ``IMGSTREAM_*``
environment > defaults). Fields carry their units. :meth:`WorkerConfig.validate`
raises :class:`~imgstream.errors.ConfigError` naming the flag at fault.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from imgstream.errors import ConfigError
from imgstream.storage import DEFAULT_MAX_BYTES

#: Decoded pixels above which an image is refused (checked from its header).
DEFAULT_MAX_PIXELS = 100_000_000
#: Decoded-pixel ceiling for images the producer tiles (they are big on purpose).
MAX_SOURCE_PIXELS = 2_000_000_000
#: Output formats.
FORMATS = ("png", "jpg", "webp")

REFS_TOPIC = "imgstream.refs"
RESULTS_TOPIC = "imgstream.results"
DLQ_TOPIC = "imgstream.dlq"
DEFAULT_GROUP = "imgstream"


def default_worker_id() -> str:
    """``host-pid``: unique per process, readable in records."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to run."""

    bootstrap: str
    out_dir: str
    ops: str = "gray"
    group: str = DEFAULT_GROUP
    refs_topic: str = REFS_TOPIC
    results_topic: str = RESULTS_TOPIC
    dlq_topic: str = DLQ_TOPIC
    roots: tuple[str, ...] = field(default_factory=lambda: (os.getcwd(),))
    max_batch: int = 16
    max_wait_s: float = 0.5
    threads: int = 4
    max_inflight_batches: int = 2
    output_format: str = "png"
    png_level: int = 1
    jpeg_quality: int = 95
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    allow_hardlinks: bool = False
    fsync: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    idle_exit_s: float | None = None
    #: Refs older than this when their batch starts are skipped as ``stale``.
    max_age_s: float | None = None
    #: An image still running after this many seconds becomes a ``timeout`` failure.
    image_timeout_s: float | None = None
    #: Adapt the batch size (1..max_batch) to keep latency near this.
    target_latency_s: float | None = None
    #: Exit (code 5) when the output store refuses writes for longer; None waits forever.
    max_outage_s: float | None = None
    #: Image threads stuck past --image-timeout that are replaced before the
    #: worker stops (code 6); None means as many as --threads.
    max_stuck_threads: int | None = None
    worker_id: str = field(default_factory=default_worker_id)
    fetch_max_wait_ms: int = 20
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 60000

    def validate(self) -> WorkerConfig:
        """Check every field; raise ConfigError naming the flag. Returns self."""
        checks = [
            (self.max_batch >= 1, "--max-batch must be at least 1"),
            (self.max_wait_s >= 0, "--max-wait must not be negative"),
            (1 <= self.threads <= 256, "--threads must be between 1 and 256"),
            (self.max_inflight_batches >= 1, "in-flight batches must be at least 1"),
            (
                self.output_format in FORMATS,
                f"--format must be one of {', '.join(FORMATS)}, got {self.output_format!r}",
            ),
            (0 <= self.png_level <= 9, "--png-level must be between 0 and 9"),
            (1 <= self.jpeg_quality <= 100, "--jpeg-quality must be between 1 and 100"),
            (self.max_bytes > 0, "--max-bytes must be positive"),
            (self.max_pixels > 0, "--max-pixels must be positive"),
            (
                self.metrics_port is None or 0 <= self.metrics_port <= 65535,
                "--metrics-port must be between 0 and 65535",
            ),
            (self.idle_exit_s is None or self.idle_exit_s > 0, "--idle-exit must be positive"),
            (self.max_age_s is None or self.max_age_s > 0, "--max-age must be positive"),
            (
                self.image_timeout_s is None or self.image_timeout_s > 0,
                "--image-timeout must be positive",
            ),
            (
                self.target_latency_s is None or self.target_latency_s > 0,
                "--target-latency must be positive",
            ),
            (self.max_outage_s is None or self.max_outage_s > 0, "--max-outage must be positive"),
            (
                self.max_stuck_threads is None or self.max_stuck_threads >= 0,
                "max stuck threads must not be negative",
            ),
            (bool(self.bootstrap), "--bootstrap is required"),
            (bool(self.out_dir), "--out is required"),
            (bool(self.roots), "at least one --root is required"),
            (
                self.heartbeat_interval_ms < self.session_timeout_ms,
                "heartbeat interval must be below the session timeout",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for root in self.roots:
            if not os.path.isdir(root):
                raise ConfigError(f"--root {root!r} is not a directory")
        return self
