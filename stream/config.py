"""The worker's configuration: one frozen object, the one table of settings.

Each field of :class:`WorkerConfig` carries its flag, help text and
environment variable in its metadata (see :func:`setting`); the CLI options
and the worker command line (:func:`to_args`) are generated from it, so a
setting is typed once. The config is built once at the edge
(:mod:`imgstream.cli`: flags > ``IMGSTREAM_*`` environment > defaults).
Fields carry their units. :meth:`WorkerConfig.validate` raises
:class:`~imgstream.errors.ConfigError` naming a flag that exists.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from imgstream.commits.attempts import DEFAULT_MAX_ATTEMPTS
from imgstream.errors import ConfigError, ImageError
from imgstream.io.awsconfig import check_endpoint
from imgstream.io.objstore import is_s3, parse_s3
from imgstream.io.storage import DEFAULT_MAX_BYTES
from imgstream.schema.topics import TopicSettings, parse_topic_configs, topic_settings

#: Decoded pixels above which an image is refused (checked from its header).
DEFAULT_MAX_PIXELS = 100_000_000
#: Decoded-pixel ceiling for images the producer tiles (they are big on purpose).
MAX_SOURCE_PIXELS = 2_000_000_000
#: Output formats.
FORMATS = ("png", "jpg", "webp")

REFS_TOPIC = "imgstream.refs"
RESULTS_TOPIC = "imgstream.results"
DLQ_TOPIC = "imgstream.dlq"
ATTEMPTS_TOPIC = "imgstream.attempts"
STATE_TOPIC = "imgstream.state"
DEFAULT_GROUP = "imgstream"
#: Seconds every command waits for the bootstrap servers before it exits 3.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
#: Kafka's max.poll.interval.ms unless --max-poll-interval says otherwise.
DEFAULT_MAX_POLL_INTERVAL_MS = 60_000
#: Prefix of the environment variables that stand in for flags.
ENV_PREFIX = "IMGSTREAM_"


def default_worker_id() -> str:
    """``host-pid``: unique per process, readable in records."""
    return f"{socket.gethostname()}-{os.getpid()}"


def default_threads() -> int:
    """Image threads per worker: every core (cv2 releases the GIL), at least 2."""
    return max(2, os.cpu_count() or 2)


def env_name(flag: str) -> str:
    """The environment variable standing in for ``flag``: ``--max-batch`` -> IMGSTREAM_MAX_BATCH."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def setting(
    default: Any = MISSING,
    *,
    flag: str,
    help: str,
    factory: Callable[[], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    directory: bool = False,
) -> Any:
    """A WorkerConfig field with its flag, help and environment variable.

    ``choices`` limits a string to those values; ``directory`` marks a path to a folder.
    """
    metadata = {
        "flag": flag,
        "help": help,
        "env": env_name(flag),
        "choices": choices,
        "directory": directory,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to run; each field with a flag is a CLI option."""

    bootstrap: str = setting(flag="--bootstrap", help="Kafka bootstrap servers host:port.")
    out_dir: str = setting(
        flag="--out", help="Output directory, or s3://bucket/prefix.", directory=True
    )
    ops: str = setting(
        "gray", flag="--ops", help="Pipeline spec, e.g. 'gray' (see `imgstream ops`)."
    )
    group: str = setting(DEFAULT_GROUP, flag="--group", help="Consumer group.")
    refs_topic: str = setting(REFS_TOPIC, flag="--topic", help="Refs topic.")
    results_topic: str = setting(RESULTS_TOPIC, flag="--results-topic", help="Results topic.")
    dlq_topic: str = setting(DLQ_TOPIC, flag="--dlq-topic", help="Dead-letter (failures) topic.")
    attempts_topic: str = setting(
        ATTEMPTS_TOPIC,
        flag="--attempts-topic",
        help="Compacted topic of start counts: an image that kills its worker is found here.",
    )
    state_topic: str = setting(
        STATE_TOPIC,
        flag="--state-topic",
        help="Compacted topic of per-source state snapshots (pipelines with a stateful step).",
    )
    roots: tuple[str, ...] = setting(
        flag="--root",
        help="Directory or s3://bucket[/prefix] references may resolve under (repeatable; "
        "default: the current directory).",
        factory=lambda: (os.getcwd(),),
        directory=True,
    )
    max_batch: int = setting(16, flag="--max-batch", help="Close a batch at this many images.")
    max_wait_s: float = setting(
        0.5, flag="--max-wait", help="Close a batch this many seconds after its first image."
    )
    threads: int = setting(
        flag="--threads", help="Image threads per worker (default: cores).", factory=default_threads
    )
    max_inflight_batches: int = setting(
        2, flag="--max-inflight-batches", help="Batches in the pipeline before polling pauses."
    )
    output_format: str = setting(
        "png", flag="--format", help="Output image format.", choices=FORMATS
    )
    png_level: int = setting(1, flag="--png-level", help="PNG compression level, 0-9.")
    jpeg_quality: int = setting(95, flag="--jpeg-quality", help="JPEG quality, 1-100.")
    max_bytes: int = setting(
        DEFAULT_MAX_BYTES, flag="--max-bytes", help="Refuse input files larger than this."
    )
    max_pixels: int = setting(
        DEFAULT_MAX_PIXELS,
        flag="--max-pixels",
        help="Refuse images with more pixels than this (checked before decoding).",
    )
    allow_hardlinks: bool = setting(
        False, flag="--allow-hardlinks", help="Read files that have several hard links."
    )
    fsync: bool = setting(False, flag="--fsync", help="fsync every output before committing.")
    metrics_port: int | None = setting(
        None, flag="--metrics-port", help="Serve Prometheus /metrics on this port (0: any free)."
    )
    metrics_host: str = setting(
        "127.0.0.1", flag="--metrics-host", help="Address /metrics listens on."
    )
    idle_exit_s: float | None = setting(
        None,
        flag="--idle-exit",
        help="Exit 0 after this many seconds with nothing received or in flight.",
    )
    #: Refs older than this when their batch starts are skipped as ``stale``.
    max_age_s: float | None = setting(
        None,
        flag="--max-age",
        help="Skip refs older than this many seconds at batch start (failure 'stale'): "
        "live dashboards want fresh frames.",
    )
    #: An image still running after this many seconds becomes a ``timeout`` failure.
    image_timeout_s: float | None = setting(
        None,
        flag="--image-timeout",
        help="An image still running after this many seconds becomes a 'timeout' failure "
        "and its partition moves on.",
    )
    #: Adapt the batch size (1..max_batch) to keep latency near this.
    target_latency_s: float | None = setting(
        None,
        flag="--target-latency",
        help="Adapt the batch size (1..--max-batch) to the backlog and the per-image cost "
        "to keep latency near this many seconds.",
    )
    #: An output store outage longer than this stops the worker (exit code in errors.py).
    max_outage_s: float | None = setting(
        None,
        flag="--max-outage",
        help="Stop the worker when the output store stays unwritable this many seconds "
        "(default: wait for it).",
    )
    #: Starts of one image, across worker lives, before it is a ``crashed`` failure.
    max_attempts: int = setting(
        DEFAULT_MAX_ATTEMPTS,
        flag="--max-attempts",
        help="Dead-letter an image as 'crashed' once the worker process died (segfault, "
        "abort, OOM kill) this many times while running it.",
    )
    #: Image threads stuck past --image-timeout that are replaced before the
    #: worker stops (exit code in errors.py); None means as many as --threads.
    max_stuck_threads: int | None = setting(
        None,
        flag="--max-stuck-threads",
        help="Stop the worker once more image threads than this are stuck past "
        "--image-timeout [default: --threads].",
    )
    #: None: the consumer default of :data:`imgstream.kafka_io.CLIENT_DEFAULTS`.
    max_poll_interval_ms: int | None = setting(
        None,
        flag="--max-poll-interval",
        help="Kafka max.poll.interval.ms (the worker keeps polling while batches run) "
        "[default: 60000].",
    )
    connect_timeout_s: float = setting(
        DEFAULT_CONNECT_TIMEOUT_S,
        flag="--connect-timeout",
        help="Seconds to wait for the broker before giving up (exit 3).",
    )
    #: A Kafka client properties file (security.protocol, sasl.*, ssl.*, ...): read by
    #: imgstream.kafka_io.load_client_settings, passed on to child workers by path.
    kafka_config: str | None = setting(
        None,
        flag="--kafka-config",
        help="Kafka client properties file (key=value: security.protocol, sasl.mechanism, "
        "sasl.username, sasl.password, ssl.ca.location, ..., bootstrap.servers); "
        "applied to every Kafka client.",
    )
    #: Topic-level configs for the topics imgstream creates (imgstream.schema.topics).
    topic_configs: tuple[str, ...] = setting(
        flag="--topic-config",
        help="[ROLE:]key=value topic config for the topics imgstream creates (repeatable; "
        "ROLE is refs, results or dlq; none: all three), e.g. refs:retention.ms=86400000. "
        "Existing topics are left alone.",
        factory=tuple,
    )
    replication_factor: int | None = setting(
        None,
        flag="--replication-factor",
        help="Replication factor of the topics imgstream creates [default: the broker's].",
    )
    #: Each batch's records and offsets in one Kafka transaction (Apache Kafka only).
    exactly_once: bool = setting(
        False,
        flag="--exactly-once",
        help="Write each batch's result, batch and failure records and commit its offsets "
        "in one Kafka transaction (readers use read_committed); Apache Kafka only, refused "
        "on the embedded broker.",
    )
    #: Refs partitions read directly (no group membership, so no join wait); the
    #: group still holds the commits. Empty: the group assigns partitions.
    partitions: tuple[int, ...] = setting(
        flag="--partition",
        help="Read this refs partition directly instead of joining the group's assignment "
        "(repeatable; commits still go to --group). Only for a worker that alone owns "
        "its partitions: no other member takes them over if it stops.",
        factory=tuple,
    )
    worker_id: str = field(default_factory=default_worker_id)

    @property
    def topic_settings(self) -> TopicSettings:
        """How missing topics are created (ConfigError naming the flag if malformed)."""
        return topic_settings(self.topic_configs, self.replication_factor)

    def topic_roles(self) -> dict[str, str]:
        """Topic name -> role, for the topics a worker reads and writes."""
        return {
            self.refs_topic: "refs",
            self.results_topic: "results",
            self.dlq_topic: "dlq",
            self.attempts_topic: "attempts",
            self.state_topic: "state",
        }

    @property
    def poll_interval_s(self) -> float:
        """The effective max.poll.interval.ms, in seconds."""
        ms = self.max_poll_interval_ms
        return (DEFAULT_MAX_POLL_INTERVAL_MS if ms is None else ms) / 1000.0

    def validate(self) -> WorkerConfig:
        """Check every field; raise ConfigError naming the flag (or, with s3://, the AWS
        setting that gave a bad endpoint). Returns self."""
        checks = [
            (
                bool(self.bootstrap),
                "--bootstrap is required (or bootstrap.servers in --kafka-config)",
            ),
            (bool(self.out_dir), "--out is required"),
            (self.max_batch >= 1, "--max-batch must be at least 1"),
            (self.max_wait_s >= 0, "--max-wait must not be negative"),
            (1 <= self.threads <= 256, "--threads must be between 1 and 256"),
            (self.max_inflight_batches >= 1, "--max-inflight-batches must be at least 1"),
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
            (self.max_attempts >= 1, "--max-attempts must be at least 1"),
            (
                self.max_stuck_threads is None or self.max_stuck_threads >= 0,
                "--max-stuck-threads must not be negative",
            ),
            (
                self.max_poll_interval_ms is None or self.max_poll_interval_ms >= 1000,
                "--max-poll-interval must be at least 1000 (ms)",
            ),
            (self.connect_timeout_s > 0, "--connect-timeout must be positive"),
            (bool(self.roots), "at least one --root is required"),
            (
                self.replication_factor is None or self.replication_factor >= 1,
                "--replication-factor must be at least 1",
            ),
            (all(p >= 0 for p in self.partitions), "--partition must not be negative"),
            (
                not (self.partitions and self.exactly_once),
                "--partition cannot be used with --exactly-once (transactions need the "
                "group's generation)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        parse_topic_configs(self.topic_configs)  # ConfigError naming --topic-config
        for root in self.roots:
            if is_s3(root):
                _check_s3("--root", root)
            elif not os.path.isdir(root):
                raise ConfigError(f"--root {root!r} is not a directory")
        if is_s3(self.out_dir):
            _check_s3("--out", self.out_dir)
        if is_s3(self.out_dir) or any(is_s3(root) for root in self.roots):
            check_endpoint()  # names AWS_ENDPOINT_URL (or where else the endpoint came from)
        return self


def _check_s3(flag: str, uri: str) -> None:
    """ConfigError naming ``flag`` unless ``uri`` is a valid ``s3://bucket[/prefix]``."""
    try:
        parse_s3(uri)
    except ImageError as exc:
        raise ConfigError(f"{flag} {uri!r}: {exc.message}") from None


def settings() -> list[Field[Any]]:
    """The fields of WorkerConfig that are CLI options, in table order."""
    return [f for f in fields(WorkerConfig) if "flag" in f.metadata]


def to_args(config: WorkerConfig) -> list[str]:
    """The flags that rebuild ``config`` in another process (``imgstream work ...``).

    Every setting that is not None is passed, so the child's environment cannot
    change what the parent resolved.
    """
    args: list[str] = []
    for f in settings():
        flag, value = f.metadata["flag"], getattr(config, f.name)
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, tuple):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args
