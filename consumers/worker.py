"""The worker process: build a Runner on Kafka and run it until told to stop.

SIGTERM and SIGINT stop taking work; the in-flight batches are finished and
committed (except images waiting on an unavailable output store, which stay
uncommitted), the member leaves the group, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType

from imgstream.clock import SystemClock
from imgstream.commits.transactions import transactional_id
from imgstream.config import WorkerConfig
from imgstream.io.outage import OutputGate
from imgstream.kafka_io import (
    KafkaAttempts,
    KafkaSink,
    KafkaSource,
    KafkaStateStore,
    KafkaTransactor,
    ensure_topics,
    refuse_unreliable_transactions,
    worker_settings,
)
from imgstream.metrics import Metrics
from imgstream.ops import build_registry
from imgstream.ops.pipeline import Pipeline, parse_spec
from imgstream.schema.records import TopicPartition
from imgstream.worker.hooks import RunnerHooks
from imgstream.worker.processor import ImageProcessor
from imgstream.worker.runner import Runner

log = logging.getLogger("imgstream.worker")

#: Partitions of topics a worker has to create (room for a few workers in a group).
DEFAULT_PARTITIONS = 4

#: How long a record waits for others to share its produce request (ms). Sent
#: one by one, as images finish, each record was a request of its own: the
#: requests, not the bytes, cost the worker, the broker and the readers CPU.
RECORDS_LINGER_MS = 25


class _Relay:
    """The consumer's rebalance handler, pointed at the runner once both exist.

    The consumer subscribes (and so needs its handler) before the runner that
    handles rebalances is built; no rebalance is delivered before the first
    ``poll()``, which only the runner makes.
    """

    def __init__(self) -> None:
        self.runner: Runner | None = None

    def on_revoked(self, tps: list[TopicPartition]) -> None:
        """Forward to the runner."""
        if self.runner is not None:
            self.runner.on_revoked(tps)

    def on_assigned(self, tps: list[TopicPartition]) -> None:
        """Forward to the runner."""
        if self.runner is not None:
            self.runner.on_assigned(tps)


def build_runner(
    config: WorkerConfig,
    metrics: Metrics | None = None,
    hooks: RunnerHooks | None = None,
    pipeline: Pipeline | None = None,
    keep_state: bool = True,
) -> Runner:
    """A Runner wired to Kafka, for ``config`` (validated here; ``pipeline``: its parsed
    ``--ops``, if the caller has it). A stateful pipeline's states are snapshotted
    and restored unless ``keep_state`` is False (replay starts from empty state)."""
    config.validate()
    if pipeline is None:
        pipeline = parse_spec(config.ops, build_registry())
    if config.exactly_once:
        refuse_unreliable_transactions(config.bootstrap, worker_settings(config))
    clock = SystemClock()
    metrics = metrics if metrics is not None else Metrics()
    gate = OutputGate(clock, max_outage_s=config.max_outage_s)
    processor = ImageProcessor(config, pipeline, clock, gate)
    relay = _Relay()
    kafka = worker_settings(config)  # read once: a recreated producer uses the same
    source = KafkaSource(
        config.bootstrap,
        config.group,
        [config.refs_topic],
        handler=relay,
        # One batch's worth per poll: back-pressure then bounds what is in flight
        # (and so what a crash can make the group redo) to a few batches.
        max_poll_records=config.max_batch,
        client_id=config.worker_id,
        settings=kafka,
        max_poll_interval_ms=config.max_poll_interval_ms,
        partitions=config.partitions,
    )

    def sink() -> KafkaSink:
        return KafkaSink(
            config.bootstrap, config.worker_id, linger_ms=RECORDS_LINGER_MS, settings=kafka
        )

    transactor = None
    if config.exactly_once:
        transactor = KafkaTransactor(
            config.bootstrap,
            transactional_id(config.group, config.worker_id),
            source.group_metadata,
            settings=kafka,
            client_id=config.worker_id,
            on_restart=metrics.producer_restarts.inc,
        )
    attempts = KafkaAttempts(
        config.bootstrap, config.attempts_topic, config.group, config.worker_id, kafka
    )
    states = None
    if pipeline.stateful and keep_state:
        states = KafkaStateStore(config.bootstrap, config.state_topic, kafka)
    relay.runner = Runner(
        config, processor, source, sink, clock, metrics, hooks, transactor, attempts, states
    )
    return relay.runner


def tune_allocator() -> None:
    """Keep freed image buffers in the heap instead of returning them to the OS.

    glibc serves allocations over 128 KiB with mmap and unmaps them on free,
    so every decoded frame costs thousands of page faults (measured: ~9 ms of
    system time per 1080p frame, a third of its CPU). Raising the mmap and
    trim thresholds lets the next frame reuse the same memory.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    if not libc.mallopt(m_mmap_threshold, 256 << 20):
        libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)
    # One arena: a buffer freed by one image thread is reused by the next image
    # on any thread, instead of every thread keeping its own high-water mark.
    libc.mallopt(m_arena_max, 1)


def process_age_s() -> float | None:
    """Seconds since this process was created (Linux ``/proc``), else None."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime_s = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))


def run_worker(config: WorkerConfig, held_s: float = 0.0) -> int:
    """Run one worker in this process; returns the exit code.

    ``held_s``: how long the process waited for ``imgstream run`` to release
    it (not start-up work: reported apart from the process phase).

    0 after a signal or idle exit; otherwise the :mod:`imgstream.errors`
    exception that stopped it reaches the CLI edge with its code (4: records
    undeliverable, 5: output store out past ``--max-outage``, 6: too many
    image threads stuck).
    """
    tune_allocator()
    config.validate()
    # The spec (and its plugins) before the broker: a bad --ops is exit 2, not 3.
    pipeline = parse_spec(config.ops, build_registry())
    started = time.monotonic()
    if config.threads >= (os.cpu_count() or 1):
        # The image threads already use every core: OpenCV's own pool inside each
        # op would oversubscribe them (and spin-wait), so ops run on their thread.
        from imgstream._cv import cv2

        cv2.setNumThreads(1)
    # A worker may start before anything was produced: create the topics it
    # reads and writes, so it neither waits for metadata nor fails its sends.
    ensure_topics(
        config.bootstrap,
        {
            config.refs_topic: DEFAULT_PARTITIONS,
            config.results_topic: DEFAULT_PARTITIONS,
            config.dlq_topic: 1,
            config.attempts_topic: 1,
            config.state_topic: 1,
        },
        worker_settings(config),
        config.topic_roles(),
        config.topic_settings,
    )
    topics_s = time.monotonic() - started
    metrics = Metrics()
    runner = build_runner(config, metrics, pipeline=pipeline)
    clients_s = time.monotonic() - started - topics_s
    process_s = process_age_s()
    if process_s is not None:
        runner.startup["process"] = process_s - (time.monotonic() - started) - held_s
    if held_s:
        runner.startup["held"] = held_s
    runner.startup["topics"] = topics_s
    runner.startup["clients"] = clients_s
    if config.metrics_port is not None:
        server, _thread = metrics.serve(config.metrics_port, config.metrics_host)
        log.info("metrics on http://%s:%d/metrics", config.metrics_host, server.server_port)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the in-flight batch", signal.Signals(signum).name)
        runner.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "worker %s: group %r, topic %r, pipeline %s (%s)",
        config.worker_id,
        config.group,
        config.refs_topic,
        runner.processor.pipeline.canonical,
        runner.processor.pipeline.hash,
    )
    runner.run()
    return 0
