"""BatchRun: a pipeline with a ``batch`` step runs each micro-batch together.

A ``batch`` operation (a user's model, ``infer``) takes the images of one
micro-batch in one call, the way Triton's dynamic batcher hands a model the
requests that arrived together. Images still start as they join their batch:
each is read and decoded on its own pool job
(:meth:`~imgstream.worker.processor.ImageProcessor.prepare`). When the batch
closes, one more job (:class:`BatchRun`, queued behind those, so it never
waits for a job that has not started) waits for them, runs the pipeline over
the batch with :meth:`~imgstream.ops.pipeline.Pipeline.run_many` (the per-image
stretches between batch steps spread over a thread pool of its own), then
encodes and stores each output. The emitter sees one :class:`Part` per
image, done when the batch's job is.

``--image-timeout`` counts the batch job's running time against the limit:
a batch whose model call runs past it times out as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from imgstream.errors import TIMEOUT, ImageError
from imgstream.schema.records import Message
from imgstream.worker.imagepool import Job
from imgstream.worker.outcome import Outcome, Prepared
from imgstream.worker.processor import ImageProcessor


class Part:
    """One image's share of a batch job: waits on it, reads its own outcome."""

    def __init__(self, whole: Job[list[Outcome]], index: int) -> None:
        self._whole = whole
        self._index = index

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the batch job finished or timed out."""
        return self._whole.wait(timeout_s)

    def done(self) -> bool:
        """True once the batch job finished or timed out."""
        return self._whole.done()

    @property
    def timed_out(self) -> bool:
        """The batch job ran past ``--image-timeout``."""
        return self._whole.timed_out

    @property
    def error(self) -> BaseException | None:
        """What the batch job raised (the output store's outage at shutdown)."""
        return self._whole.error

    @property
    def outcome(self) -> Outcome | None:
        """This image's outcome."""
        outcomes = self._whole.outcome
        return None if outcomes is None else outcomes[self._index]


class BatchRun:
    """Runs the pipeline over the prepared images of one micro-batch."""

    def __init__(self, processor: ImageProcessor, threads: int) -> None:
        self._processor = processor
        self._stretches = ThreadPoolExecutor(threads, thread_name_prefix="imgstream-stretch")

    def __call__(
        self,
        jobs: Sequence[Job[Prepared | Outcome]],
        messages: Sequence[Message],
        batch_id: str,
        timeout_s: float | None,
    ) -> list[Outcome]:
        """One outcome per message, in order."""
        processor = self._processor
        outcomes: list[Outcome | None] = [None] * len(messages)
        ready: list[tuple[int, Prepared]] = []
        for i, (job, msg) in enumerate(zip(jobs, messages, strict=True)):
            job.wait()
            if job.timed_out:
                error = ImageError(TIMEOUT, f"ran for over --image-timeout {timeout_s:g}s")
                outcomes[i] = Outcome(msg, processor.failure(msg, error, batch_id, None))
            elif job.error is not None:
                raise job.error
            elif isinstance(job.outcome, Prepared):
                ready.append((i, job.outcome))
            else:
                assert job.outcome is not None
                outcomes[i] = job.outcome
        clock = processor.clock
        started = clock.monotonic()
        got = processor.pipeline.run_many(
            [p.image for _, p in ready], [p.view for _, p in ready], self._stretches.map
        )
        ops_s = clock.monotonic() - started

        def finish(k: int) -> Outcome:
            ready_k, result = ready[k][1], got[k]
            if isinstance(result, ImageError):
                failure = processor.failure(ready_k.message, result, batch_id, ready_k.ref)
                return Outcome(ready_k.message, failure)
            ready_k.image, outputs = result
            return processor.finish(ready_k, outputs, ops_s)

        finished = self._stretches.map(finish, range(len(ready)))
        for (i, _), outcome in zip(ready, finished, strict=True):
            outcomes[i] = outcome
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(messages)
        return done

    def close(self) -> None:
        """Let the stretch threads end."""
        self._stretches.shutdown(wait=False)
