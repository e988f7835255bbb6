"""One image, start to finish: ref -> load -> decode -> ops -> encode -> store -> record.

:meth:`ImageProcessor.process` never raises for a bad image or message: it
returns an :class:`Outcome` holding either a ``Result`` or a ``Failure``
record, with per-stage timings. It is called from a thread pool; OpenCV,
hashing and file I/O release the GIL, so images of a batch run in parallel.

The one exception is the output store itself: a write it refuses for
infrastructure reasons (full, read-only, gone) is retried by the
:class:`~imgstream.io.outage.OutputGate`, and if the worker stops meanwhile
:class:`~imgstream.errors.OutputUnavailable` propagates, so the image is
neither dead-lettered nor committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from imgstream import __version__
from imgstream._cv import cv2
from imgstream.clock import Clock
from imgstream.commits.state import Key, SourceStates
from imgstream.config import WorkerConfig
from imgstream.errors import (
    BAD_MESSAGE,
    CRASHED,
    DECODE_ERROR,
    IO_ERROR,
    OP_ERROR,
    STALE,
    ImageError,
    OutputUnavailable,
)
from imgstream.io import imaging
from imgstream.io.objstore import ObjectStore
from imgstream.io.outage import OutputGate
from imgstream.io.storage import output_path
from imgstream.io.stores import Inputs, Outputs, absolute
from imgstream.ops.pipeline import Pipeline
from imgstream.schema.codec import b64
from imgstream.schema.decoding import decode_ref
from imgstream.schema.records import Failure, ImageRef, Lineage, Message, Result
from imgstream.tiling import Tile, TileView, tile_from_meta
from imgstream.worker.outcome import Outcome, Prepared

#: The empty file the output gate writes in ``{out}/{pipeline_hash}/`` to test the store.
PROBE_NAME = ".imgstream-probe"


def library_versions() -> dict[str, str]:
    """Versions recorded in every result's lineage."""
    return {"imgstream": __version__, "opencv": cv2.__version__, "numpy": np.__version__}


class ImageProcessor:
    """Turns one consumed message into a stored output and a record."""

    def __init__(
        self,
        config: WorkerConfig,
        pipeline: Pipeline,
        clock: Clock,
        gate: OutputGate | None = None,
    ) -> None:
        self.config = config
        self.gate = gate if gate is not None else OutputGate(clock, None, config.max_outage_s)
        self.pipeline = pipeline
        self.clock = clock
        client = ObjectStore()  # one S3 client (per bucket) for the worker's threads
        self.store = Inputs(config.roots, config.max_bytes, config.allow_hardlinks, client)
        self.outputs = Outputs(config.fsync, client)
        self.encode_params = imaging.encode_params(
            config.output_format, config.png_level, config.jpeg_quality
        )
        self.versions = {**library_versions(), **pipeline.versions()}
        #: A stateful pipeline's per-source states (frames of a source run in order).
        self.states = SourceStates(config.group, pipeline.hash) if pipeline.stateful else None
        self._tile_slot = threading.Lock()
        probe_path = posixpath.join(config.out_dir, pipeline.hash, PROBE_NAME)
        #: A write at the top of the pipeline's outputs: tells a folder that fails
        #: alone (its images fail) from a store that refuses everything (an outage).
        self._probe = lambda: self.outputs.write(probe_path, b"")

    def failure(
        self, msg: Message, error: ImageError, batch_id: str, ref: ImageRef | None
    ) -> Failure:
        """The failure record of a message (``ref`` when it parsed)."""
        return self._failure(msg, error, batch_id, ref)

    def _failure(
        self, msg: Message, error: ImageError, batch_id: str, ref: ImageRef | None
    ) -> Failure:
        return Failure(
            error_type=error.type,
            error_message=error.message,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            worker=self.config.worker_id,
            ts=self.clock.wall_ms(),
            id=ref.id if ref else None,
            uri=ref.uri if ref else None,
            source=ref.source if ref else None,
            raw_b64=None if ref else b64(msg.value),
            batch_id=batch_id,
            parent=_parent(ref),
        )

    def process(
        self,
        msg: Message,
        batch_id: str,
        queued_at: float | None = None,
        queued_ms: int | None = None,
    ) -> Outcome:
        """Process one message; never raises for bad input.

        ``queued_at`` (monotonic) and ``queued_ms`` (wall) are when the image
        was queued: its ``wait`` timing is the time until a thread took it,
        and ``--max-age`` is checked against its age at queueing.
        """
        lane = self.lane(msg)
        ran = False  # a reserved turn is passed on exactly once, however the frame ends
        try:
            ready = self.prepare(msg, batch_id, queued_at, queued_ms, hold_tile=True)
            if isinstance(ready, Outcome):
                return ready
            try:
                t0 = self.clock.monotonic()
                with self._guard(msg, batch_id, ready.ref) as failed:
                    if lane is None or self.states is None:
                        out, outputs = self.pipeline.run(ready.image, ready.view)
                    else:
                        ran = True
                        with self.states.turn(lane, msg.offset) as state:
                            out, outputs = self.pipeline.run(ready.image, ready.view, state)
                if failed:
                    return failed[0]
                ready.image = out
                return self.finish(ready, outputs, self.clock.monotonic() - t0)
            finally:
                ready.release()
        finally:
            if lane is not None and self.states is not None and not ran:
                self.states.skip(lane, msg.offset)

    def lane(self, msg: Message) -> Key | None:
        """The (partition, source) whose frames a stateful pipeline runs in order; None
        for a stateless pipeline or a message that is no ref."""
        if self.states is None:
            return None
        try:
            ref = decode_ref(msg.value, msg.timestamp_ms)
        except ImageError:
            return None
        return (msg.tp, ref.source or "_")

    def prepare(
        self,
        msg: Message,
        batch_id: str,
        queued_at: float | None = None,
        queued_ms: int | None = None,
        hold_tile: bool = False,
    ) -> Prepared | Outcome:
        """Decode the ref, read and decode the image: ready for the pipeline, or a failure.

        With ``hold_tile`` a tile image holds the worker's one tile slot until
        :meth:`Prepared.release` (a worker holds one tile at a time: tiles
        spread over the group, and its memory stays a small part of the image).
        """
        wait_s = 0.0 if queued_at is None else max(0.0, self.clock.monotonic() - queued_at)
        try:
            ref = decode_ref(msg.value, msg.timestamp_ms)
        except ImageError as exc:
            return Outcome(msg, self._failure(msg, exc, batch_id, None))
        max_age = self.config.max_age_s
        if max_age is not None and queued_ms is not None:
            age_s = (queued_ms - ref.ts) / 1000.0
            if age_s > max_age:
                stale = ImageError(
                    STALE, f"ref is {age_s:.1f}s old when queued, over --max-age {max_age:g}s"
                )
                return Outcome(msg, self._failure(msg, stale, batch_id, ref))
        with self._guard(msg, batch_id, ref) as failed:
            tile = self._tile(ref)
            slot = self._tile_slot if tile is not None and hold_tile else None
            if slot is not None:
                slot.acquire()
            try:
                return self._load(msg, ref, batch_id, wait_s, tile, slot)
            except BaseException:
                if slot is not None:
                    slot.release()
                raise
        return failed[0]

    def finish(self, ready: Prepared, outputs: dict[str, Any], ops_s: float) -> Outcome:
        """Encode and store the pipeline's output image; the result, or a failure."""
        with self._guard(ready.message, ready.batch_id, ready.ref) as failed:
            return self._store(ready, outputs, ops_s)
        return failed[0]

    @contextlib.contextmanager
    def _guard(self, msg: Message, batch_id: str, ref: ImageRef) -> Iterator[list[Outcome]]:
        """Turn what an image raises into its failure outcome (in the yielded list).

        The output store's :class:`OutputUnavailable` passes: it is not the image's.
        """
        failed: list[Outcome] = []
        try:
            yield failed
        except ImageError as exc:
            failed.append(Outcome(msg, self._failure(msg, exc, batch_id, ref)))
        except OutputUnavailable:
            raise  # the store, not the image: never a failure record
        except Exception as exc:  # a bug or an unforeseen input: still one failure
            error = ImageError(OP_ERROR, f"{type(exc).__name__}: {exc}")
            failed.append(Outcome(msg, self._failure(msg, error, batch_id, ref)))

    def crashed(
        self,
        msg: Message,
        batch_id: str,
        queued_at: float | None = None,
        queued_ms: int | None = None,
        *,
        attempts: int,
    ) -> Outcome:
        """The failure of an image that killed the worker each of the ``attempts`` times it ran."""
        error = ImageError(
            CRASHED,
            f"the worker process died each of the {attempts} times it processed this image "
            f"(--max-attempts {self.config.max_attempts})",
        )
        try:
            ref: ImageRef | None = decode_ref(msg.value, msg.timestamp_ms)
        except ImageError:
            ref = None
        return Outcome(msg, replace(self._failure(msg, error, batch_id, ref), attempts=attempts))

    def _tile(self, ref: ImageRef) -> Tile | None:
        """The tile a ref describes, checked against the pipeline's footprint."""
        if ref.tile is None:
            return None
        try:
            tile = tile_from_meta(ref.tile)
            overlap = int(ref.tile.get("overlap", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ImageError(BAD_MESSAGE, f"invalid 'tile' field: {exc}") from None
        need = self.pipeline.footprint()
        if need is None:
            steps = ", ".join(self.pipeline.whole_image_steps())
            raise ImageError(OP_ERROR, f"{steps}: needs the whole image, so it cannot run on tiles")
        if need > overlap:
            raise ImageError(
                OP_ERROR,
                f"the pipeline reads {need} px around each pixel; the tile's overlap is {overlap}",
            )
        return tile

    def _load(
        self,
        msg: Message,
        ref: ImageRef,
        batch_id: str,
        wait_s: float,
        tile: Tile | None,
        slot: threading.Lock | None,
    ) -> Prepared:
        mono = self.clock.monotonic
        t0 = mono()
        data = self.store.read(ref.uri).data
        sha = hashlib.sha256(data).hexdigest()
        n_in = len(data)
        t1 = mono()
        image = imaging.decode(data, self.config.max_pixels).image
        del data  # buffers are dropped as soon as they are used: peak memory per image
        t2 = mono()
        height, width = image.shape[:2]
        channels = 1 if image.ndim == 2 else int(image.shape[2])
        view = None
        if tile is not None:
            if (width, height) != (tile.halo.w, tile.halo.h):
                raise ImageError(
                    DECODE_ERROR,
                    f"tile image is {width}x{height}, its ref says {tile.halo.w}x{tile.halo.h}",
                )
            view = TileView(tile.core_in_halo(), tile.halo.x, tile.halo.y)
            width, height = tile.core.w, tile.core.h
        timings = {"wait": wait_s, "load": t1 - t0, "decode": t2 - t1}
        return Prepared(
            msg,
            ref,
            batch_id,
            image,
            view,
            int(width),
            int(height),
            channels,
            sha,
            n_in,
            timings,
            slot,
        )

    def _store(self, ready: Prepared, outputs: dict[str, Any], ops_s: float) -> Outcome:
        mono = self.clock.monotonic
        out, ref, view = ready.image, ready.ref, ready.view
        if view is not None:
            k = view.core
            out = out[k.y : k.y + k.h, k.x : k.x + k.w]
        t3 = mono()
        # ``motion:action=gate`` and ``dedupe`` keep only some frames: the others'
        # records still come, without an output image.
        kept = all(d.get("kept", True) for d in outputs.values() if isinstance(d, dict))
        encoded = b""
        if kept:
            try:
                encoded = imaging.encode(out, self.config.output_format, self.encode_params)
            except (ValueError, cv2.error) as exc:
                raise ImageError(OP_ERROR, f"cannot encode the output: {exc}") from None
        del out
        ready.image = None  # the pixels are encoded: let them go
        t4 = mono()
        path = output_path(
            self.config.out_dir, self.pipeline.hash, ref.source, ref.id, self.config.output_format
        )
        if kept:
            try:
                self.gate.write(path, lambda: self.outputs.write(path, encoded), self._probe)
            except OSError as exc:
                raise ImageError(IO_ERROR, f"cannot write {path}: {exc.strerror or exc}") from None
        t5 = mono()
        timings = dict(ready.timings, ops=ops_s, encode=t4 - t3, store=t5 - t4)
        msg = ready.message
        now_ms = self.clock.wall_ms()
        result = Result(
            id=ref.id,
            uri=ref.uri,
            output_uri=absolute(path) if kept else None,
            pipeline=self.pipeline.canonical,
            pipeline_hash=self.pipeline.hash,
            width=ready.width,
            height=ready.height,
            channels=ready.channels,
            outputs=_jsonable(outputs),
            timings={k: round(v, 6) for k, v in timings.items()},
            batch_id=ready.batch_id,
            worker=self.config.worker_id,
            source=ref.source,
            ts=ref.ts,
            latency_ms=max(0, now_ms - ref.ts),
            lineage=Lineage(msg.topic, msg.partition, msg.offset, ready.sha, self.versions),
            bytes_in=ready.n_in,
            tile=ref.tile,
        )
        return Outcome(msg, result, ready.width * ready.height, ready.n_in, len(encoded))


def _parent(ref: ImageRef | None) -> str | None:
    parent = (ref.tile or {}).get("parent") if ref is not None else None
    return parent if isinstance(parent, str) else None


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
