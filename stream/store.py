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
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from imgstream.integrate import WINDOWS, Accumulator, window_start

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

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def add(self, record: Mapping[str, Any]) -> bool:
        """Store a result or failure record; False if it was already there."""
        return self.add_many([record]) == 1

    def add_many(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Store records in one transaction; returns how many were new."""
        new = 0
        touched: dict[tuple[str, str, int], Accumulator] = {}
        with self._db:
            for record in records:
                kind = record.get("kind")
                if kind not in ("result", "failure"):
                    continue
                ref_id, phash = record_key(record)
                tile = record.get("tile") or {}
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        ref_id,
                        phash,
                        kind,
                        record.get("source"),
                        record.get("ts"),
                        record.get("pipeline"),
                        (record.get("error") or {}).get("type"),
                        tile.get("parent"),
                        tile.get("row", 0) * tile.get("cols", 0) + tile.get("col", 0)
                        if tile
                        else None,
                        record.get("output_uri"),
                        json.dumps(record, separators=(",", ":")),
                    ),
                )
                if cur.rowcount != 1:
                    continue
                new += 1
                if kind == "result":
                    self._add_detections(ref_id, phash, record.get("outputs") or {})
                if tile:  # a tile counts through its fused parent, not on its own
                    continue
                self._accumulate(record, touched)
            for (source, window, start), acc in touched.items():
                self._db.execute(
                    "INSERT OR REPLACE INTO accumulators VALUES (?,?,?,?)",
                    (source, window, start, json.dumps(acc.to_dict())),
                )
        return new

    def _accumulate(
        self, record: Mapping[str, Any], touched: dict[tuple[str, str, int], Accumulator]
    ) -> None:
        source = record.get("source") or "_"
        ts = int(record.get("ts") or 0)
        for window in WINDOWS:
            key = (source, window, window_start(ts, window))
            acc = touched.get(key)
            if acc is None:
                row = self._db.execute(
                    "SELECT data FROM accumulators WHERE source=? AND window=? AND start=?", key
                ).fetchone()
                acc = Accumulator.from_dict(json.loads(row[0])) if row else Accumulator()
                touched[key] = acc
            if record.get("kind") == "result":
                acc.add_result(record)
            else:
                acc.add_failure(str((record.get("error") or {}).get("type")))

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
