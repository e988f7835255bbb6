"""The newest records' timing data, kept in memory and read from the store incrementally.

Latency percentiles and images/s need each record's ``ts`` and
``latency_ms``, which live inside the record's JSON: reading them for tens of
thousands of records on every poll would cost seconds on a large store. The
store never updates or deletes a record and ``rowid`` grows with each insert,
so :class:`Tail` reads the newest :attr:`keep` once, then on each poll only
the rows past the highest ``rowid`` it has seen. A store that was replaced
(its highest ``rowid`` went down) is read again from scratch.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from typing import NamedTuple

#: Records kept at most (latency percentiles and rates are over these).
KEEP = 10_000


class Entry(NamedTuple):
    """What the totals need of one record (tiles excluded: they count through their parent)."""

    kind: str
    ts: int
    latency_ms: int | None


_SELECT = (
    "SELECT rowid, kind, ts, json_extract(record, '$.latency_ms') FROM records"
    " WHERE parent IS NULL AND rowid > ?"
)


class Tail:
    """The newest records' entries, oldest first. Thread-safe (the server's request threads)."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._entries: deque[Entry] = deque(maxlen=keep)  # guarded by _lock
        self._last_rowid = 0

    def read(self, db: sqlite3.Connection) -> list[Entry]:
        """Bring the tail up to date from ``db``; the entries, oldest first."""
        with self._lock:
            top = int(db.execute("SELECT max(rowid) FROM records").fetchone()[0] or 0)
            if top < self._last_rowid:  # a new store at the same path
                self._entries.clear()
                self._last_rowid = 0
            if top > self._last_rowid:
                rows = db.execute(
                    _SELECT + " ORDER BY rowid DESC LIMIT ?", (self._last_rowid, self.keep)
                ).fetchall()
                for _, kind, ts, latency in reversed(rows):
                    if ts is not None:
                        lat = int(latency) if isinstance(latency, (int, float)) else None
                        self._entries.append(Entry(str(kind), int(ts), lat))
                self._last_rowid = top
            return list(self._entries)
