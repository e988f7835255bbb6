"""Start N worker processes, and the one-command job behind ``imgstream run``.

:func:`run_job` starts (or joins) a broker, creates the topics, starts the
workers in one consumer group, produces the refs, collects every result and
failure record until each ref is accounted for, stops the workers, writes
``results.jsonl`` and returns a :class:`JobSummary`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from imgstream.broker import EmbeddedBroker
from imgstream.clock import SystemClock
from imgstream.config import WorkerConfig
from imgstream.consumers.aggregator import Aggregator, decode_messages
from imgstream.consumers.processes import EarlyWorkers, WorkerProcesses, reads_directly
from imgstream.integrate import RunTotals
from imgstream.io.stores import local_dir
from imgstream.kafka_io import (
    KafkaSink,
    TopicReader,
    ensure_topics,
    refuse_unreliable_transactions,
    start_group_at_end,
    worker_settings,
)
from imgstream.partitioning import Partitioner
from imgstream.producers.produce import produce_refs
from imgstream.schema.records import BatchSummary, Failure, ImageRef, Result
from imgstream.store import SQLiteStore


@dataclass
class JobSummary(RunTotals):
    """What ``imgstream run`` (and replay) report: the run's totals and more."""

    expected: int = 0
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0
    records: int = 0
    duplicates: int = 0
    batches: int = 0
    pipeline: str = ""
    pipeline_hash: str = ""
    worker_exit_codes: list[int] = field(default_factory=list)
    tiles: int = 0
    parents: int = 0
    fused: int = 0
    #: Messages a replay passed over (outside its range).
    skipped: int = 0
    #: Start-up phases of ``run`` in seconds (broker, topics, first result).
    startup: dict[str, float] = field(default_factory=dict)
    #: When (monotonic) the first result or failure arrived.
    first_record_at: float | None = None

    def lines(self) -> list[str]:
        """The printed summary."""
        rate = self.accounted / self.seconds if self.seconds else 0.0
        mps = self.pixels / 1e6 / self.seconds if self.seconds else 0.0
        failed = sum(self.failures.values())
        by_type = ", ".join(f"{t}: {n}" for t, n in sorted(self.failures.items()))
        out = [
            f"refs        {self.expected}   pipeline {self.pipeline} ({self.pipeline_hash})",
            f"ok          {self.ok}",
            f"failed      {failed}" + (f"   ({by_type})" if by_type else ""),
            f"missing     {len(self.missing)}",
            f"time        {self.seconds:.2f} s   {rate:.1f} images/s   {mps:.2f} megapixels/s",
        ]
        p50, p99 = self.percentile(50), self.percentile(99)
        if p50 is not None and p99 is not None:
            out.append(f"latency     p50 {p50:.0f} ms   p99 {p99:.0f} ms")
        out.append(f"batches     {self.batches}   duplicate records {self.duplicates}")
        if self.startup:
            phases = ", ".join(f"{k} {v:.2f}s" for k, v in self.startup.items())
            out.append(f"start-up    {phases} (worker phases: logs/)")
        if self.parents:
            out.append(
                f"tiled       {self.parents} images in {self.tiles} tiles; {self.fused} stitched"
            )
        return out


def collect(
    reader: TopicReader,
    expected: set[str],
    workers: WorkerProcesses | None,
    sink: TextIO,
    summary: JobSummary,
    on_progress: Callable[[int], None] | None = None,
    stall_timeout_s: float = 300.0,
    worker_ids: set[str] | None = None,
    aggregator: Aggregator | None = None,
) -> None:
    """Read records until every expected id is accounted for (or no progress is possible).

    With an ``aggregator``, every polled batch is also stored, accumulated and
    fused (its fused parents come back through the results topic).
    """
    seen: set[str] = set()
    last_progress = time.monotonic()
    while len(seen) < len(expected):
        messages = reader.poll(0.2)
        # Decoded once through the codec for the collector and the aggregator
        # (about 20 us a record, against 12 for bare JSON: see the h2 report).
        decoded = decode_messages(messages)
        if aggregator is not None:
            if decoded:
                aggregator.handle_records([obj for obj, _ in decoded])
            aggregator.check_timeouts()
        for obj, record in decoded:
            if isinstance(record, BatchSummary):
                if worker_ids is None or record.worker in worker_ids:
                    summary.batches += 1
                    _write(sink, obj)
                continue
            if not isinstance(record, (Result, Failure)) or record.id not in expected:
                continue
            summary.records += 1
            _write(sink, obj)
            if record.id in seen:
                summary.duplicates += 1
                continue
            seen.add(record.id)
            last_progress = time.monotonic()
            if summary.first_record_at is None:
                summary.first_record_at = last_progress
            if on_progress is not None:
                on_progress(1)
            summary.add(record)
        if not decoded:
            if workers is not None:
                workers.restart_crashed()
                if workers.alive() == 0:
                    break
            if time.monotonic() - last_progress > stall_timeout_s:
                break
    summary.missing = sorted(expected - seen)


def _write(sink: TextIO, record: dict[str, Any]) -> None:
    sink.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class JobPlan:
    """What a run produces and waits for."""

    refs: Sequence[ImageRef]
    #: Parent ids of tiled images: each gets a fused result from the aggregator.
    parents: Sequence[str] = ()
    db_path: str | None = None
    tile_timeout_s: float = 120.0


def run_job(
    plan: JobPlan,
    config: WorkerConfig,
    workers: int,
    partitions: int,
    partitioner: Partitioner,
    embedded: bool,
    on_progress: Callable[[int], None] | None = None,
    stall_timeout_s: float = 300.0,
    exclusive: bool = False,
    early: EarlyWorkers | None = None,
) -> JobSummary:
    """The whole job; ``config.bootstrap`` is ignored when ``embedded``.

    ``early``: workers already started, held (:func:`start_early`); the
    embedded broker then listens where they were told to connect, and they
    are released once the topics exist.

    ``exclusive``: the group is this run's alone (a fresh name); a single
    worker then reads every refs partition directly (:func:`reads_directly`).
    """
    direct = reads_directly(exclusive, workers, config.exactly_once)
    started = time.monotonic()
    broker = None
    if embedded:
        try:
            broker = EmbeddedBroker(early.port if early else None).start()
        except BaseException:
            if early is not None:
                early.procs.stop()
            raise
    broker_s = time.monotonic() - started
    try:
        if broker is not None:
            config = replace(config, bootstrap=broker.bootstrap)
        summary = _run(
            plan,
            config,
            workers,
            partitions,
            partitioner,
            on_progress,
            stall_timeout_s,
            fresh_topics=broker is not None,
            direct=direct,
            procs=early.procs if early else None,
        )
        if broker is not None:
            summary.startup = {"broker": broker_s, **summary.startup}
        return summary
    finally:
        if broker is not None:
            broker.stop()


def _run(
    plan: JobPlan,
    config: WorkerConfig,
    n_workers: int,
    partitions: int,
    partitioner: Partitioner,
    on_progress: Callable[[int], None] | None,
    stall_timeout_s: float,
    fresh_topics: bool,
    direct: bool = False,
    procs: WorkerProcesses | None = None,
) -> JobSummary:
    from imgstream.ops import build_registry
    from imgstream.ops.pipeline import parse_spec

    pipeline = parse_spec(config.ops, build_registry())
    kafka = worker_settings(config)
    if config.exactly_once:  # before any topic or worker: one line and exit 2
        refuse_unreliable_transactions(config.bootstrap, kafka)
    topics_started = time.monotonic()
    ensure_topics(
        config.bootstrap,
        {
            config.refs_topic: partitions,
            config.results_topic: partitions,
            config.dlq_topic: 1,
            config.attempts_topic: 1,
            config.state_topic: 1,
        },
        kafka,
        config.topic_roles(),
        config.topic_settings,
    )
    if not fresh_topics:  # a shared cluster: skip the refs already in the topic
        start_group_at_end(config.bootstrap, config.group, config.refs_topic, kafka)
    if direct and procs is None:  # the topic may exist with another partition count: ask
        probe = KafkaSink(config.bootstrap, "imgstream-run", settings=kafka)
        try:
            config = replace(config, partitions=tuple(range(probe.partitions(config.refs_topic))))
        finally:
            probe.close()
    topics_s = time.monotonic() - topics_started
    run_dir = local_dir(config.out_dir)
    os.makedirs(run_dir, exist_ok=True)
    started = time.monotonic()
    if procs is None:
        procs = WorkerProcesses(config, n_workers, os.path.join(run_dir, "logs"))
    procs.release()
    # The aggregator runs on the collector's messages: no second consumer, no
    # second group join, and the store is complete when the run ends.
    store = SQLiteStore(plan.db_path) if plan.db_path else None
    agg_sink = (
        KafkaSink(config.bootstrap, "imgstream-run-aggregator", settings=kafka) if store else None
    )
    aggregator = (
        Aggregator(
            store,
            agg_sink,
            config.results_topic,
            config.dlq_topic,
            SystemClock(),
            "imgstream-run-aggregator",
            tile_timeout_s=plan.tile_timeout_s,
        )
        if store is not None
        else None
    )
    all_ids = {r.id for r in plan.refs} | set(plan.parents)
    summary = JobSummary(
        expected=len(all_ids),
        pipeline=pipeline.canonical,
        pipeline_hash=pipeline.hash,
        tiles=sum(1 for r in plan.refs if r.tile),
        parents=len(plan.parents),
        startup={"topics": topics_s},
    )
    results_path = os.path.join(run_dir, "results.jsonl")
    try:
        # The collector need not see each record the moment it lands: fuller
        # fetches, a tenth as many, leave the cores to the workers.
        reader = TopicReader(
            config.bootstrap,
            [config.results_topic, config.dlq_topic],
            settings=kafka,
            fetch_max_wait_ms=100,
            fetch_min_bytes=16 << 10,
        )
        producer = KafkaSink(config.bootstrap, "imgstream-run", settings=kafka)
        try:
            report = produce_refs(plan.refs, producer, config.refs_topic, partitioner)
        finally:
            producer.close()
        expected = set(report.ids) | set(plan.parents)
        with open(results_path, "w", encoding="utf-8") as sink:
            collect(
                reader,
                expected,
                procs,
                sink,
                summary,
                on_progress,
                stall_timeout_s,
                procs.worker_ids,
                aggregator,
            )
        summary.missing = sorted(set(summary.missing) | (all_ids - expected))
        summary.seconds = time.monotonic() - started
        if summary.first_record_at is not None:
            summary.startup["first-result"] = summary.first_record_at - started
        reader.close()
    finally:
        summary.worker_exit_codes = procs.stop()
        if aggregator is not None:
            summary.fused = aggregator.fused
        if agg_sink is not None:
            agg_sink.close()
        if store is not None:
            store.close()
    return summary
