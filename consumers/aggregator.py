"""The aggregator: results in, a queryable store, accumulated statistics, fused tiles.

It consumes the results and dead-letter topics, merges every record into the
store (once per ref id + pipeline hash, so replays change nothing), folds
new records into per-source, per-window accumulators, and, when every tile of
a parent image has a result, fuses the tiles (:mod:`imgstream.consumers.mosaic`
stitches their outputs into the parent's output and merges their statistics
and detections) and emits one ``result`` for the parent. A parent whose tile
failed, or that is still incomplete after ``tile_timeout_s``, becomes a
``failure`` of type ``incomplete`` naming the missing tiles. Offsets are
committed after the store has committed.

Anyone can write to the results topic, so the aggregator trusts no record: a
message that is not a valid record, or whose ``tile`` (or a failure's
``parent``) is malformed, is logged, counted and skipped, and the good records
of its batch are stored and committed as usual. One bad record never stops it.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from imgstream._cv import cv2
from imgstream.clock import Clock
from imgstream.commits.delivery import Sink
from imgstream.consumers import mosaic
from imgstream.errors import INCOMPLETE, ImageError
from imgstream.io.stores import Outputs
from imgstream.schema.codec import encode, failure_to_dict, result_to_dict
from imgstream.schema.decoding import check_tile_fields, parse_json_object, record_from_dict
from imgstream.schema.records import Failure, Message, Record, Result, TopicPartition
from imgstream.store import SQLiteStore
from imgstream.tiling import Tile, tile_from_meta, tile_id
from imgstream.worker.runner import JOIN_GRACE_S

log = logging.getLogger("imgstream.aggregator")


class Aggregator:
    """Store, accumulate and fuse; driven by batches of consumed messages."""

    def __init__(
        self,
        store: SQLiteStore,
        sink: Sink | None,
        results_topic: str,
        dlq_topic: str,
        clock: Clock,
        worker_id: str,
        out_dir: str | None = None,
        tile_timeout_s: float = 300.0,
    ) -> None:
        self.store = store
        self.sink = sink
        self.results_topic = results_topic
        self.dlq_topic = dlq_topic
        self.clock = clock
        self.worker_id = worker_id
        self.out_dir = out_dir
        self.tile_timeout_s = tile_timeout_s
        #: Tile outputs and mosaics, local or s3:// (one S3 client for the aggregator).
        self.files = Outputs()
        self.pending: dict[tuple[str, str], float] = {}
        self.fused = 0
        self.incomplete = 0
        #: Messages that were not valid records (a malformed ``tile`` included),
        #: and records the store refused: each was logged and skipped.
        self.rejected = 0

    # -- records -------------------------------------------------------------

    def handle(self, messages: Sequence[Message]) -> int:
        """Store a batch of messages; fuse parents they complete. Returns new records.

        A message that is not a valid record (not JSON, a field missing, a
        ``ts`` past year 3000, a malformed ``tile``) is logged, counted in
        :attr:`rejected` and skipped: one bad record never stops the
        aggregator or its batch.
        """
        parsed = parse_records(messages)
        self.rejected += len(messages) - len(parsed)
        return self.handle_records(parsed)

    def handle_records(self, parsed: Sequence[Mapping[str, Any]]) -> int:
        """Like :meth:`handle`, for record objects already parsed.

        Their tile fields are checked again (a caller may not have decoded them
        through :func:`decode_messages`); invalid ones are logged and counted.
        """
        records = []
        for r in parsed:
            if r.get("kind") not in ("result", "failure"):
                continue
            try:
                check_tile_fields(r)
            except ImageError as exc:
                self.rejected += 1
                log.warning("skipping record %s: %s", str(r.get("id"))[:200], exc.message[:300])
                continue
            records.append(r)
        before = self.store.rejected
        new = self.store.add_many(records)
        self.rejected += self.store.rejected - before
        for record in records:
            try:
                if record["kind"] == "result" and record.get("tile") is not None:
                    self._tile_done(record)
                elif record["kind"] == "failure" and record.get("parent"):
                    self._tile_failed(record)
            except (KeyError, TypeError, ValueError, OverflowError):
                # Checked records do not get here; should one (a bug), it must
                # not crash-loop the aggregator on the same batch for ever.
                log.exception("cannot follow up tile record %s", str(record.get("id"))[:200])
        return new

    def _tile_done(self, record: Mapping[str, Any]) -> None:
        like = tile_from_meta(record["tile"])  # checked by check_tile_fields
        parent, phash = record["tile"]["parent"], record["pipeline_hash"]
        if self.store.get(parent, phash) is not None:
            self.pending.pop((parent, phash), None)
            return
        cells = self._grid_cells(parent, like, self._tile_results(parent, phash))
        total = like.rows * like.cols
        if len(cells) < total:
            self.pending.setdefault((parent, phash), self.clock.monotonic())
            return
        self.pending.pop((parent, phash), None)
        try:
            fused = self.fuse(parent, phash, [cells[k] for k in sorted(cells)])
        except (OSError, ValueError, KeyError, cv2.error) as exc:
            self._incomplete(
                parent,
                record.get("source"),
                record["tile"].get("parent_uri"),
                f"tiles could not be fused: {exc}",
            )
            return
        self.store.add(result_to_dict(fused))
        self._emit(self.results_topic, parent, fused)
        self.fused += 1
        log.info("fused %s from %d tiles -> %s", parent, total, fused.output_uri)

    def _tile_results(self, parent: str, phash: str) -> list[Result]:
        """The stored tile results of a parent, decoded; any malformed one left out.

        Records are checked when they arrive, but a store written by an older
        version may hold tiles with malformed fields: they are skipped here.
        """
        out = []
        for obj in self.store.tiles(parent, phash):
            try:
                record = record_from_dict(obj)
                if not isinstance(record, Result) or record.tile is None:
                    continue
                tile_from_meta(record.tile)
            except (ImageError, ValueError) as exc:
                reason = exc.message if isinstance(exc, ImageError) else str(exc)
                log.warning("stored tile %s of %s left out: %s", obj.get("id"), parent, reason)
                continue
            out.append(record)
        return out

    @staticmethod
    def _grid_cells(
        parent: str, like: Tile, tiles: Sequence[Result]
    ) -> dict[tuple[int, int], Result]:
        """The tiles of ``like``'s grid by (row, col), each named as its position says.

        A stored tile of another grid of the same parent (its rows or cols
        differ) or a second record for one position is left out, so fusion
        sees exactly one tile per cell of one grid.
        """
        cells: dict[tuple[int, int], Result] = {}
        for t in tiles:
            tile = tile_from_meta(t.tile)  # _tile_results checked it
            if (tile.rows, tile.cols) != (like.rows, like.cols):
                continue
            if t.id == tile_id(parent, tile.row, tile.col):
                cells.setdefault((tile.row, tile.col), t)
        return cells

    def _tile_failed(self, record: Mapping[str, Any]) -> None:
        error = record.get("error") or {}
        self._incomplete(
            record["parent"],
            record.get("source"),
            None,
            f"tile {record.get('id')} failed ({error.get('type')}: {error.get('message')})",
        )

    def check_timeouts(self) -> None:
        """Parents still incomplete after the timeout become ``incomplete`` failures."""
        now = self.clock.monotonic()
        for (parent, phash), since in list(self.pending.items()):
            if now - since < self.tile_timeout_s:
                continue
            del self.pending[(parent, phash)]
            tiles = self._tile_results(parent, phash)
            meta: Mapping[str, Any] = (tiles[0].tile or {}) if tiles else {}
            rows = cols = 0
            have: set[tuple[int, int]] = set()
            if tiles:
                like = tile_from_meta(meta)  # _tile_results checked it
                rows, cols = like.rows, like.cols
                have = set(self._grid_cells(parent, like, tiles))
            # The first few missing cells only: a grid may have billions of cells.
            missing = itertools.islice(
                (f"r{r}c{c}" for r in range(rows) for c in range(cols) if (r, c) not in have),
                20,
            )
            self._incomplete(
                parent,
                tiles[0].source if tiles else None,
                meta.get("parent_uri"),
                f"{rows * cols - len(have)} of {rows * cols} tiles missing after "
                f"{self.tile_timeout_s:.0f}s: {', '.join(missing)}",
            )

    def _incomplete(self, parent: str, source: str | None, uri: str | None, message: str) -> None:
        failure = Failure(
            error_type=INCOMPLETE,
            error_message=message,
            topic=self.results_topic,
            partition=-1,
            offset=-1,
            worker=self.worker_id,
            ts=self.clock.wall_ms(),
            id=parent,
            uri=uri,
            source=source,
        )
        if self.store.add(failure_to_dict(failure)):
            self.incomplete += 1
            log.warning("parent %s incomplete: %s", parent, message)
            self._emit(self.dlq_topic, parent, failure)

    def _emit(self, topic: str, key: str, record: Result | Failure) -> None:
        if self.sink is None:
            return
        value = encode(record)

        def ack(error: BaseException | None) -> None:
            if error is not None:
                log.error("could not emit %s for %s: %s", type(record).__name__, key, error)

        self.sink.send(topic, key.encode("utf-8"), value, ack)

    # -- fusion --------------------------------------------------------------

    def fuse(self, parent: str, phash: str, tiles: Sequence[Result]) -> Result:
        """Stitch the tiles' outputs, merge their data; the parent's result record."""
        return mosaic.fuse(
            parent,
            phash,
            tiles,
            files=self.files,
            out_dir=self.out_dir,
            clock=self.clock,
            worker=self.worker_id,
            topic=self.results_topic,
        )


def decode_messages(messages: Sequence[Message]) -> list[tuple[dict[str, Any], Record]]:
    """The valid records among the messages: each as its JSON object and decoded.

    Decoding goes through :mod:`imgstream.schema.decoding` (the one record model). The
    object is kept too, because the store and ``results.jsonl`` keep a record
    as it was written (unknown fields included). Invalid messages are logged
    and left out.
    """
    out = []
    for msg in messages:
        try:
            obj = parse_json_object(msg.value)
            record = record_from_dict(obj)  # tile fields included
        except ImageError as exc:
            log.warning(
                "skipping %s/%d@%d: %s", msg.topic, msg.partition, msg.offset, exc.message[:200]
            )
            continue
        out.append((obj, record))
    return out


def parse_records(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The JSON objects of the valid records among the messages (see decode_messages)."""
    return [obj for obj, _ in decode_messages(messages)]


class AggregatorLoop:
    """Consume results and failures into an Aggregator until stopped, or until
    ``idle_exit_s`` pass without a message once the group has assigned partitions
    (or ``JOIN_GRACE_S`` after the start: the worker's rule)."""

    def __init__(
        self,
        aggregator: Aggregator,
        source: Any,
        poll_s: float = 0.2,
        stop: threading.Event | None = None,
        idle_exit_s: float | None = None,
    ) -> None:
        self.aggregator = aggregator
        self.source = source
        self.poll_s = poll_s
        self._stop = stop if stop is not None else threading.Event()
        self.idle_exit_s = idle_exit_s
        self.records = 0

    def stop(self) -> None:
        """Finish the current batch and stop (thread- and signal-safe)."""
        self._stop.set()

    def run(self) -> None:
        """Poll, store, flush emitted records, commit; until stopped or idle."""
        monotonic = self.aggregator.clock.monotonic
        started = last = monotonic()
        assigned = False
        try:
            while not self._stop.is_set():
                messages = self.source.poll(self.poll_s)
                now = monotonic()
                if messages or not (assigned or now - started >= JOIN_GRACE_S):
                    assigned = assigned or bool(messages) or bool(self.source.assignment())
                    last = now
                elif self.idle_exit_s is not None and now - last > self.idle_exit_s:
                    log.info("no new record for %.1fs: exiting", self.idle_exit_s)
                    break
                if messages:
                    self.records += self.aggregator.handle(messages)
                self.aggregator.check_timeouts()
                if messages:
                    if self.aggregator.sink is not None:
                        self.aggregator.sink.flush(30)
                    offsets: dict[TopicPartition, int] = {}
                    for m in messages:
                        offsets[m.tp] = max(offsets.get(m.tp, 0), m.offset + 1)
                    self.source.commit(offsets)
        finally:
            self.source.close()
