"""The queryable result store: every record merged into SQLite, plus accumulators.

:class:`ResultStore` is the small interface the aggregator and ``imgstream
query`` use; :class:`SQLiteStore` is the embedded implementation (a server
database can implement the same methods). A record is stored once per
(ref id, pipeline hash): replaying or duplicating result records changes
nothing, and accumulators are updated only when a record is new, in the same
transaction.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from imgstream.errors import ImageError
from imgstream.integrate import WINDOWS, Accumulator, window_start
from imgstream.schema.codec import MAX_INT
from imgstream.schema.decoding import record_from_dict, valid_ts
from imgstream.schema.records import Failure, Result
from imgstream.tiling import tile_index

log = logging.getLogger("imgstream.store")

DETECTION_KINDS = ("faces", "plates", "qr", "contours")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id TEXT NOT NULL,
    pipeline_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT,
    ts INTEGER,
    pipeline TEXT,
    error_type TEXT,
    parent TEXT,
    tile_index INTEGER,
    output_uri TEXT,
    record TEXT NOT NULL,
    PRIMARY KEY (id, pipeline_hash)
);
CREATE INDEX IF NOT EXISTS records_source ON records (source, ts);
CREATE INDEX IF NOT EXISTS records_ts ON records (ts);
CREATE INDEX IF NOT EXISTS records_pipeline ON records (pipeline_hash);
CREATE INDEX IF NOT EXISTS records_parent ON records (parent, pipeline_hash);
CREATE TABLE IF NOT EXISTS detections (
    id TEXT NOT NULL,
    pipeline_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    x INTEGER, y INTEGER, w INTEGER, h INTEGER
);
CREATE INDEX IF NOT EXISTS detections_kind ON detections (kind, id);
CREATE TABLE IF NOT EXISTS accumulators (
    source TEXT NOT NULL,
    window TEXT NOT NULL,
    start INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (source, window, start)
);
"""


@dataclass(frozen=True)
class Query:
    """Filters for :meth:`ResultStore.query` (None: no filter)."""

    source: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    pipeline: str | None = None
    has: str | None = None
    id: str | None = None
    kind: str | None = None
    limit: int | None = None


class ResultStore(Protocol):
    """What the aggregator and the query command need from a store."""

    def add(self, record: Mapping[str, Any]) -> bool: ...
    def get(self, ref_id: str, pipeline_hash: str) -> dict[str, Any] | None: ...
    def tiles(self, parent: str, pipeline_hash: str) -> list[dict[str, Any]]: ...
    def query(self, q: Query) -> list[dict[str, Any]]: ...
    def summary(self, window: str = "hour") -> dict[str, Accumulator]: ...
    def close(self) -> None: ...


def record_key(record: Mapping[str, Any]) -> tuple[str, str]:
    """(id, pipeline hash): failures of unparsed messages are keyed by their offset."""
    ref_id = record.get("id")
    if ref_id is None:
        ref_id = f"@{record.get('topic')}/{record.get('partition')}/{record.get('offset')}"
    if record.get("kind") == "failure":
        return str(ref_id), "failure:" + str((record.get("error") or {}).get("type"))
    return str(ref_id), str(record.get("pipeline_hash", ""))


class SQLiteStore:
    """A ResultStore in one SQLite file (WAL mode; one writer)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        #: Records that could not be stored and were skipped (logged).
        self.rejected = 0

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def add(self, record: Mapping[str, Any]) -> bool:
        """Store a result or failure record; False if it was already there."""
        return self.add_many([record]) == 1

    def add_many(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Store records in one transaction; returns how many were new.

        A record that cannot be stored (a ``ts`` out of range, an integer
        SQLite cannot hold, a malformed field) is logged, counted in
        :attr:`rejected` and skipped; the rest of the batch is stored. One bad
        record must never roll back, or crash-loop, everything around it.
        """
        new = 0
        touched: dict[tuple[str, str, int], Accumulator] = {}
        with self._db:
            for record in records:
                kind = record.get("kind")
                if kind not in ("result", "failure"):
                    continue
                self._db.execute("SAVEPOINT record")
                try:
                    # Accumulate into copies: a record that fails half way must
                    # leave no trace in the accumulators either.
                    staged = dict(touched)
                    added = self._add_one(record, staged)
                except (
                    ImageError,
                    sqlite3.Error,
                    OverflowError,
                    TypeError,
                    ValueError,
                    KeyError,
                ) as exc:
                    self._db.execute("ROLLBACK TO record")
                    self._db.execute("RELEASE record")
                    self.rejected += 1
                    log.warning(
                        "record %s could not be stored, skipped: %s: %s",
                        str(record.get("id"))[:200],
                        type(exc).__name__,
                        str(exc)[:200],
                    )
                    continue
                self._db.execute("RELEASE record")
                touched = staged
                new += added
            for (source, window, start), acc in touched.items():
                self._db.execute(
                    "INSERT OR REPLACE INTO accumulators VALUES (?,?,?,?)",
                    (source, window, start, json.dumps(acc.to_dict())),
                )
        return new

    def _add_one(
        self, record: Mapping[str, Any], touched: dict[tuple[str, str, int], Accumulator]
    ) -> int:
        """Insert one record (and its detections, accumulators); 1 if it was new."""
        kind = record.get("kind")
        ts = record.get("ts")
        if ts is not None and not valid_ts(ts):
            raise ValueError(f"ts {str(ts)[:40]} is not epoch ms before year 3000")
        ref_id, phash = record_key(record)
        tile = record.get("tile") or {}
        index = tile_index({"row": 0, "col": 0, "cols": 0, **tile}) if tile else None
        if index is not None and not 0 <= index <= MAX_INT:
            raise ValueError(f"tile index {str(index)[:40]} out of range")
        cur = self._db.execute(
            "INSERT OR IGNORE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                ref_id,
                phash,
                kind,
                record.get("source"),
                ts,
                record.get("pipeline"),
                (record.get("error") or {}).get("type"),
                tile.get("parent"),
                index,
                record.get("output_uri"),
                json.dumps(record, separators=(",", ":")),
            ),
        )
        if cur.rowcount != 1:
            return 0
        if kind == "result":
            self._add_detections(ref_id, phash, record.get("outputs") or {})
        if not tile:  # a tile counts through its fused parent, not on its own
            self._accumulate(record, touched)
        return 1

    def _accumulate(
        self, record: Mapping[str, Any], touched: dict[tuple[str, str, int], Accumulator]
    ) -> None:
        decoded = record_from_dict(record)  # raises ImageError: the record is rejected
        if not isinstance(decoded, (Result, Failure)):
            return
        source = decoded.source or "_"
        ts = decoded.ts
        for window in WINDOWS:
            key = (source, window, window_start(ts, window))
            acc = touched.get(key)
            if acc is None:
                row = self._db.execute(
                    "SELECT data FROM accumulators WHERE source=? AND window=? AND start=?", key
                ).fetchone()
                acc = Accumulator.from_dict(json.loads(row[0])) if row else Accumulator()
            else:
                acc = acc.merge(Accumulator())  # a copy: the caller may roll this record back
            touched[key] = acc
            if isinstance(decoded, Result):
                acc.add_result(decoded)
            else:
                acc.add_failure(decoded.error_type)

    def _add_detections(self, ref_id: str, phash: str, outputs: Mapping[str, Any]) -> None:
        rows = []
        for name, data in outputs.items():
            kind = name.split("#", 1)[0]
            if kind not in DETECTION_KINDS or not isinstance(data, Mapping):
                continue
            boxes: Sequence[Sequence[int]] = data.get("boxes") or []
            if kind == "qr" and data.get("found"):
                pts = data.get("points") or []
                if pts:
                    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                    boxes = [
                        [int(min(xs)), int(min(ys)), int(max(xs) - min(xs)), int(max(ys) - min(ys))]
                    ]
            rows += [(ref_id, phash, kind, *map(int, b)) for b in boxes]
        if rows:
            self._db.executemany("INSERT INTO detections VALUES (?,?,?,?,?,?,?)", rows)

    def get(self, ref_id: str, pipeline_hash: str) -> dict[str, Any] | None:
        """One record by id and pipeline hash."""
        row = self._db.execute(
            "SELECT record FROM records WHERE id=? AND pipeline_hash=?", (ref_id, pipeline_hash)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def tiles(self, parent: str, pipeline_hash: str) -> list[dict[str, Any]]:
        """The stored tile results of a parent under one pipeline, in grid order."""
        rows = self._db.execute(
            "SELECT record FROM records WHERE parent=? AND pipeline_hash=? AND kind='result'"
            " ORDER BY tile_index",
            (parent, pipeline_hash),
        ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def query(self, q: Query) -> list[dict[str, Any]]:
        """Records matching every given filter, oldest first."""
        where: list[str] = []
        args: list[Any] = []
        if q.source is not None:
            where.append("source = ?")
            args.append(q.source)
        if q.since_ms is not None:
            where.append("ts >= ?")
            args.append(q.since_ms)
        if q.until_ms is not None:
            where.append("ts < ?")
            args.append(q.until_ms)
        if q.pipeline is not None:
            where.append("(pipeline_hash = ? OR pipeline = ?)")
            args += [q.pipeline, q.pipeline]
        if q.id is not None:
            where.append("(id = ? OR parent = ?)")
            args += [q.id, q.id]
        if q.kind is not None:
            where.append("kind = ?")
            args.append(q.kind)
        if q.has is not None:
            where.append(
                "EXISTS (SELECT 1 FROM detections d WHERE d.id = records.id"
                " AND d.pipeline_hash = records.pipeline_hash AND d.kind = ?)"
            )
            args.append(q.has)
        sql = "SELECT record FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts, id"
        if q.limit is not None:
            sql += f" LIMIT {int(q.limit)}"
        return [json.loads(r[0]) for r in self._db.execute(sql, args).fetchall()]

    def summary(self, window: str = "hour") -> dict[str, Accumulator]:
        """Accumulated statistics per source (all windows merged)."""
        out: dict[str, Accumulator] = {}
        for source, data in self._db.execute(
            "SELECT source, data FROM accumulators WHERE window = ? ORDER BY source, start",
            (window,),
        ):
            acc = Accumulator.from_dict(json.loads(data))
            out[source] = out[source].merge(acc) if source in out else acc
        return out

    def windows(self, source: str, window: str = "minute") -> list[tuple[int, Accumulator]]:
        """Per-window accumulators of one source."""
        return [
            (start, Accumulator.from_dict(json.loads(data)))
            for start, data in self._db.execute(
                "SELECT start, data FROM accumulators WHERE source=? AND window=? ORDER BY start",
                (source, window),
            )
        ]
