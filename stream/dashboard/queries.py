"""The dashboard's read-only questions to the result store, answered as JSON-ready dicts.

Every function takes an open (read-only) connection and returns plain data;
nothing here knows HTTP or files. The counts come from the store's
accumulators (the same numbers as ``imgstream query --summary``: a tile
counts through its fused parent), latencies and rates from the newest
records (``records`` is insert-only, so ``rowid`` orders records by arrival).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from imgstream.dashboard.tail import Tail
from imgstream.integrate import Accumulator, RunTotals

#: "Images/s now" counts the records finished in this many seconds before now.
NOW_WINDOW_S = 30
#: The throughput and latency charts show at most this many minutes.
SERIES_MINUTES = 180
BOX_KINDS = ("faces", "plates", "contours")
_FAILURE, _FAILURE_END = "failure:", "failure;"


def version(db: sqlite3.Connection) -> int:
    """A number that grows whenever a record is added (the store never deletes)."""
    row = db.execute("SELECT max(rowid) FROM records").fetchone()
    return int(row[0] or 0)


def _summary(db: sqlite3.Connection) -> dict[str, Accumulator]:
    out: dict[str, Accumulator] = {}
    for source, data in db.execute(
        "SELECT source, data FROM accumulators WHERE window = 'hour' ORDER BY source, start"
    ):
        acc = Accumulator.from_dict(json.loads(data))
        out[source] = out[source].merge(acc) if source in out else acc
    return out


def totals(db: sqlite3.Connection, now_ms: int, tail: Tail | None = None) -> dict[str, Any]:
    """Refs, ok, failed by type, images/s now and over the run, megapixels/s, p50/p99.

    Counts come from the accumulators (all records); latencies and rates from
    ``tail`` (the newest records, see :mod:`imgstream.dashboard.tail`).
    """
    acc = Accumulator()
    for part in _summary(db).values():
        acc = acc.merge(part)
    failed = sum(acc.failures.values())
    run = RunTotals()
    last_done: int | None = None
    recent_done = 0
    for kind, ts, latency in (tail if tail is not None else Tail()).read(db):
        done = ts
        if kind == "result" and latency is not None:
            run.latencies_ms.append(latency)
            done += latency
        last_done = done if last_done is None else max(last_done, done)
        if now_ms - NOW_WINDOW_S * 1000 <= done <= now_ms:
            recent_done += 1
    row = db.execute("SELECT min(ts) FROM records").fetchone()  # the ts index: one lookup
    first_ts = int(row[0]) if row and row[0] is not None else None
    span_s = (last_done - first_ts) / 1000 if first_ts is not None and last_done else 0.0
    refs = acc.ok + failed
    return {
        "refs": refs,
        "ok": acc.ok,
        "failed": failed,
        "failures": dict(sorted(acc.failures.items())),
        "pixels": acc.pixels,
        "images_per_s_now": round(recent_done / NOW_WINDOW_S, 3),
        "images_per_s_run": round(refs / span_s, 3) if span_s > 0 else None,
        "megapixels_per_s": round(acc.pixels / 1e6 / span_s, 3) if span_s > 0 else None,
        "latency_p50_ms": run.percentile(50),
        "latency_p99_ms": run.percentile(99),
        "first_ts": first_ts,
        "last_done_ts": last_done,
    }


def series(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Per minute (by capture time), all sources: images/s, failures, mean latency, MP/s."""
    per: dict[int, Accumulator] = {}
    for start, data in db.execute(
        "SELECT start, data FROM accumulators WHERE window = 'minute' AND start >="
        " (SELECT max(start) FROM accumulators WHERE window = 'minute') - ?",
        (SERIES_MINUTES * 60_000,),
    ):
        acc = Accumulator.from_dict(json.loads(data))
        per[start] = per[start].merge(acc) if start in per else acc
    out = []
    for start in sorted(per):
        acc = per[start]
        failed = sum(acc.failures.values())
        out.append(
            {
                "t": start // 1000,
                "ok": acc.ok,
                "failed": failed,
                "images_per_s": round((acc.ok + failed) / 60, 4),
                "megapixels_per_s": round(acc.pixels / 1e6 / 60, 4),
                "mean_latency_ms": round(acc.latency_ms_sum / acc.ok, 1) if acc.ok else None,
            }
        )
    return out


def boxes_of(outputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Detection boxes of a result's outputs: faces, plates, contours, QR codes, and
    motion (its boxes are in the analysed frame's pixels: ``scale`` gives the image's)."""
    out: list[dict[str, Any]] = []
    for name, data in outputs.items():
        kind = name.split("#", 1)[0]
        if not isinstance(data, Mapping):
            continue
        boxes: Sequence[Any] = []
        scale = 1.0
        if kind in BOX_KINDS:
            boxes = data.get("boxes") or []
        elif kind == "motion":
            boxes = data.get("boxes") or []
            try:
                scale = float(data.get("scale", 1.0))
            except (TypeError, ValueError):
                continue
        elif kind == "qr" and data.get("found"):
            pts = data.get("points") or []
            try:
                xs, ys = [float(p[0]) for p in pts], [float(p[1]) for p in pts]
            except (TypeError, ValueError, IndexError):
                continue
            if xs:
                boxes = [[min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]]
        for b in boxes:
            try:
                x, y, w, h = (float(v) * scale for v in list(b)[:4])
            except (TypeError, ValueError):
                continue
            out.append({"kind": kind, "x": x, "y": y, "w": w, "h": h})
    return out[:200]


def image_item(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a thumbnail card needs from a result record."""
    outputs = record.get("outputs")
    return {
        "id": record.get("id"),
        "p": record.get("pipeline_hash"),
        "uri": record.get("uri"),
        "output_uri": record.get("output_uri"),
        "source": record.get("source"),
        "width": record.get("width"),
        "height": record.get("height"),
        "ts": record.get("ts"),
        "latency_ms": record.get("latency_ms"),
        "boxes": boxes_of(outputs) if isinstance(outputs, Mapping) else [],
    }


def sources(db: sqlite3.Connection, per_source: int = 6, limit: int = 50) -> list[dict[str, Any]]:
    """Per source (by name): its counts and newest results (tiles are shown with their parent)."""
    sums = _summary(db)
    # distinct sources by skipping through the (source, ts) index: a few lookups
    # per source instead of a scan of every record
    names: list[str | None] = [
        r[0]
        for r in db.execute(
            "WITH RECURSIVE s(x) AS (SELECT min(source) FROM records UNION ALL"
            " SELECT (SELECT min(source) FROM records WHERE source > x) FROM s"
            " WHERE x IS NOT NULL) SELECT x FROM s WHERE x IS NOT NULL LIMIT ?",
            (limit,),
        )
    ]
    if db.execute("SELECT 1 FROM records WHERE source IS NULL LIMIT 1").fetchone():
        names.append(None)
    out = []
    for name in names:
        rows = db.execute(
            "SELECT record FROM records WHERE source IS ? AND kind = 'result' AND parent IS NULL"
            " ORDER BY ts DESC, rowid DESC LIMIT ?",
            (name, per_source),
        ).fetchall()
        acc = sums.get(name if name is not None else "_", Accumulator())
        out.append(
            {
                "source": name,
                "ok": acc.ok,
                "failed": sum(acc.failures.values()),
                "failures": dict(sorted(acc.failures.items())),
                "latest": [image_item(json.loads(r[0])) for r in rows],
            }
        )
    return out


def failures(
    db: sqlite3.Connection, error_type: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """The newest failures (of one type when given) and the count of each type."""
    # a failure is stored under the pipeline hash "failure:TYPE" (store.record_key),
    # so the pipeline index finds failures without reading any other record
    types = Counter(
        {
            str(h)[len(_FAILURE) :]: int(n)
            for h, n in db.execute(
                "SELECT pipeline_hash, count(*) FROM records"
                " WHERE pipeline_hash >= ? AND pipeline_hash < ? GROUP BY pipeline_hash",
                (_FAILURE, _FAILURE_END),
            )
        }
    )
    if error_type:
        where, args = "pipeline_hash = ?", [_FAILURE + error_type]
    else:
        where, args = "pipeline_hash >= ? AND pipeline_hash < ?", [_FAILURE, _FAILURE_END]
    sql = (
        "SELECT record FROM records WHERE rowid IN (SELECT rowid FROM records WHERE "
        + where
        + " ORDER BY rowid DESC LIMIT ?) ORDER BY rowid DESC"
    )
    rows = []
    for (text,) in db.execute(sql, [*args, int(limit)]):
        r = json.loads(text)
        error = r.get("error") if isinstance(r.get("error"), Mapping) else {}
        rows.append(
            {
                "id": r.get("id"),
                "uri": r.get("uri"),
                "source": r.get("source"),
                "type": error.get("type"),
                "message": error.get("message"),
                "ts": r.get("ts"),
                "parent": r.get("parent"),
                "p": "failure:" + str(error.get("type")),
            }
        )
    return {"types": dict(sorted(types.items())), "latest": rows}


def tiled(db: sqlite3.Connection, limit: int = 20) -> list[dict[str, Any]]:
    """Tiled parents, newest first: tiles done of total, and the fused result once there."""
    out = []
    for parent, phash, done, _ in db.execute(
        "SELECT parent, pipeline_hash, count(*), max(rowid) FROM records"
        " WHERE parent IS NOT NULL"  # only tile results have a parent column
        " GROUP BY parent, pipeline_hash ORDER BY max(rowid) DESC LIMIT ?",
        (limit,),
    ).fetchall():
        row = db.execute(
            "SELECT json_extract(record, '$.tile') FROM records"
            " WHERE parent = ? AND pipeline_hash = ? LIMIT 1",
            (parent, phash),
        ).fetchone()
        tile = json.loads(row[0]) if row and row[0] else {}
        try:
            total = int(tile.get("rows", 0)) * int(tile.get("cols", 0))
        except (TypeError, ValueError):
            total = 0
        fused_row = db.execute(
            "SELECT record FROM records WHERE id = ? AND pipeline_hash = ? AND kind = 'result'",
            (parent, phash),
        ).fetchone()
        failed_row = db.execute(
            "SELECT json_extract(record, '$.error.message') FROM records"
            " WHERE id = ? AND kind = 'failure' AND error_type = 'incomplete'",
            (parent,),
        ).fetchone()
        out.append(
            {
                "parent": parent,
                "p": phash,
                "done": int(done),
                "total": total,
                "uri": tile.get("parent_uri"),
                "fused": image_item(json.loads(fused_row[0])) if fused_row else None,
                "incomplete": failed_row[0] if failed_row else None,
            }
        )
    return out


def record(db: sqlite3.Connection, ref_id: str, phash: str | None = None) -> dict[str, Any] | None:
    """One stored record (the newest of that id unless a pipeline hash is given), with context."""
    sql = "SELECT record, pipeline_hash FROM records WHERE id = ?"
    args: list[Any] = [ref_id]
    if phash:
        sql += " AND pipeline_hash = ?"
        args.append(phash)
    row = db.execute(sql + " ORDER BY rowid DESC LIMIT 1", args).fetchone()
    if row is None:
        return None
    rec = json.loads(row[0])
    others = [
        r[0]
        for r in db.execute(
            "SELECT pipeline_hash FROM records WHERE id = ? AND pipeline_hash != ?",
            (ref_id, row[1]),
        )
    ]
    tiles = [
        {"id": r[0], "p": r[1]}
        for r in db.execute(
            "SELECT id, pipeline_hash FROM records WHERE parent = ? AND pipeline_hash = ?"
            " ORDER BY tile_index LIMIT 400",
            (ref_id, row[1]),
        )
    ]
    item = image_item(rec) if rec.get("kind") == "result" else None
    return {"p": row[1], "record": rec, "item": item, "others": others, "tiles": tiles}
