"""Replay: reprocess a time range of the refs topic with a (possibly new) pipeline.

The end of the range is fixed when the replay starts: the high-watermark of
every partition, taken from real fetches (``end_offsets()`` is not reliable
on every broker). The replay reads from its group's committed offsets (from
the beginning for a new group), processes the refs whose message timestamp is
in ``[from, to)``, marks the others done without processing, and stops by
itself once every partition is committed up to its end. Outputs go under the
pipeline's hash, so a new pipeline never overwrites earlier outputs, and the
same pipeline overwrites identical bytes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from imgstream.config import WorkerConfig
from imgstream.consumers.launcher import JobSummary
from imgstream.consumers.worker import build_runner
from imgstream.kafka_io import topic_state, worker_settings
from imgstream.metrics import Metrics
from imgstream.schema.records import Message, TopicPartition
from imgstream.worker.hooks import RunnerHooks
from imgstream.worker.outcome import Outcome
from imgstream.worker.runner import Runner


def replay(
    config: WorkerConfig,
    from_ms: int,
    to_ms: int | None,
    on_progress: Callable[[int, int], None] | None = None,
) -> JobSummary:
    """Run the replay in this process; the summary of what it processed."""
    states = topic_state(
        config.bootstrap, config.refs_topic, config.group, settings=worker_settings(config)
    )
    ends = {TopicPartition(config.refs_topic, s.partition): s.highwater for s in states}
    start = {TopicPartition(config.refs_topic, s.partition): s.committed or 0 for s in states}
    total = sum(max(0, ends[tp] - start[tp]) for tp in ends)
    summary = JobSummary(expected=0)
    lock = threading.Lock()
    until = to_ms if to_ms is not None else 2**63

    def skip(msg: Message) -> bool:
        end = ends.get(msg.tp, 0)
        return msg.offset >= end or not (from_ms <= msg.timestamp_ms < until)

    def observe(outcome: Outcome) -> None:
        with lock:
            summary.expected += 1
            summary.add(outcome.record)

    def position(runner: Runner, tp: TopicPartition) -> int:
        # not committed(): a rebalance (Kafka's second join) forgets what was committed
        return max(runner.checkpoint.highest_committed(tp) or 0, start[tp])

    done_so_far = {"n": 0}

    def done(runner: Runner) -> bool:
        scanned = sum(min(position(runner, tp), ends[tp]) - start[tp] for tp in ends)
        if on_progress is not None and scanned != done_so_far["n"]:
            on_progress(scanned, total)
            done_so_far["n"] = scanned
        return all(position(runner, tp) >= end for tp, end in ends.items())

    # A replay starts every source from empty state (no snapshot is read or written).
    hooks = RunnerHooks(skip=skip, done=done, observe=observe)
    runner = build_runner(config, Metrics(), hooks, keep_state=False)
    summary.pipeline = runner.processor.pipeline.canonical
    summary.pipeline_hash = runner.processor.pipeline.hash
    started = time.monotonic()
    if total == 0:
        runner.stop()
    runner.run()
    summary.seconds = time.monotonic() - started
    summary.skipped = runner.skipped
    return summary
