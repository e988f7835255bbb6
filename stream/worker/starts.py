"""Images start as they join a batch; a closed batch goes to the emitter.

A batch is the unit of records and commits, not of work: each image is queued
on the pool the moment it joins the open batch, so the first image of a live
batch is done by the time the window closes instead of starting then. The
records still leave in batch order (the emitter waits for each batch's jobs
in turn), so offsets, commits and exactly-once transactions are unchanged.

A pipeline with a ``batch`` step starts each image's reading and decoding as
it joins, and the rest of the batch's work when it closes
(:class:`~imgstream.worker.batchrun.BatchRun`).

The caller keeps one invariant: every batch the :class:`MicroBatcher` closes
is passed to :meth:`BatchStarts.seal`, in order, or the open batch is
dropped with :meth:`BatchStarts.drop` when the batcher's is.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from imgstream.clock import Clock
from imgstream.schema.records import Message
from imgstream.worker.batching import Batch
from imgstream.worker.batchrun import BatchRun, Part
from imgstream.worker.emitter import Emitter, Submitted
from imgstream.worker.imagepool import ImagePool, Job, Pending
from imgstream.worker.outcome import Outcome
from imgstream.worker.processor import ImageProcessor

#: ``process(msg, batch_id, queued_at, queued_ms)``: one message to an outcome.
Process = Callable[[Message, str, float, int], Outcome]


@dataclass
class _Open:
    batch_id: str
    started: float  # monotonic: when its first image was queued
    jobs: list[Job[Any]] = field(default_factory=list)


class BatchStarts:
    """Queues each image of the open batch once; hands closed batches on."""

    def __init__(
        self,
        worker_id: str,
        pool: ImagePool,
        processor: ImageProcessor,
        emitter: Emitter,
        clock: Clock,
    ) -> None:
        self._worker_id = worker_id
        self._pool = pool
        self._processor = processor
        self._emitter = emitter
        self._clock = clock
        self._seq = itertools.count(1)
        self._open: _Open | None = None
        self._timeout_s = pool.timeout_s
        #: Set for a pipeline with a batch step: images are prepared as they join.
        self.batch_run = (
            BatchRun(processor, pool.threads) if processor.pipeline.has_batch_steps else None
        )

    def start(self, items: Sequence[Message], run: Process | None = None) -> list[Job[Any]]:
        """Queue the items of the open batch not queued yet (``items`` in order).

        ``run`` stands in for the processor's ``process`` (a ``crashed`` verdict).
        """
        if not items:
            return []
        if self._open is None:
            batch_id = f"{self._worker_id}-{next(self._seq)}"
            self._open = _Open(batch_id, self._clock.monotonic())
        open_ = self._open
        fn: Callable[..., Any] = self._processor.process if run is None else run
        if run is None and self.batch_run is not None:
            fn = self._processor.prepare
        states = self._processor.states if run is None else None
        for msg in items[len(open_.jobs) :]:
            if states is not None:  # its turn, in offset order, before any thread can run it
                lane = self._processor.lane(msg)
                if lane is not None:
                    states.reserve(lane, msg.offset)
            queued = self._clock.monotonic()
            args = (msg, open_.batch_id, queued, self._clock.wall_ms())
            open_.jobs.append(self._pool.submit(fn, *args))
        return open_.jobs

    def seal(self, batch: Batch[Message] | None, run: Process | None = None) -> None:
        """The batcher closed ``batch``: queue what is left of it, then its records."""
        if batch is None or not batch.items:
            return
        jobs: Sequence[Pending[Outcome]] = self.start(batch.items, run)
        assert self._open is not None
        open_, self._open = self._open, None
        if run is None and self.batch_run is not None:
            args = (jobs, batch.items, open_.batch_id, self._timeout_s)
            whole = self._pool.submit(self.batch_run, *args)
            jobs = [Part(whole, i) for i in range(len(batch.items))]
        window = max(0.0, batch.closed_at - batch.opened_at)
        self._emitter.submit(Submitted(batch, open_.batch_id, jobs, window, open_.started))

    def drop(self) -> None:
        """Forget the open batch (its images finish; their records are never sent)."""
        self._open = None
