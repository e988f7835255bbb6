"""The cameras panel: each camera's health from captures' ``/metrics``, its motion from the store.

Health (connected, frames stored per second, seconds since its last frame,
frames dropped) comes from the capture processes the dashboard scrapes
(``--metrics`` naming a ``capture --metrics-port``, see
:mod:`~imgstream.dashboard.scrape`). Motion over time is the ``motion``
operation's ``outputs.motion.ratio`` (the share of the frame that changed) in
the result store, per source. A camera is listed when either knows it; what
one does not know is null, shown as "—".

Reading a ratio means reading inside each record's JSON, so
:class:`MotionTail` reads the store incrementally, as
:class:`~imgstream.dashboard.tail.Tail` does: the newest rows once, then on
each poll only the rows past the highest ``rowid`` it has seen.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

#: Motion points kept per camera (the newest).
MOTION_POINTS = 300
#: Records read at most on the first poll, or on a poll after a burst.
READ_AT_MOST = 10_000
#: Cameras shown at most.
MAX_CAMERAS = 50

_SELECT = (
    "SELECT rowid, source, ts, json_extract(record, '$.outputs.motion.ratio') FROM records"
    " WHERE kind = 'result' AND parent IS NULL AND source IS NOT NULL AND rowid > ?"
    " ORDER BY rowid DESC LIMIT ?"
)


class MotionTail:
    """Each source's newest motion ratios, as ``(ts ms, ratio)`` in capture order.

    Thread-safe (the server's request threads share it).
    """

    def __init__(self, keep: int = MOTION_POINTS, read_at_most: int = READ_AT_MOST) -> None:
        self.keep = keep
        self.read_at_most = read_at_most
        self._lock = threading.Lock()
        self._points: dict[str, deque[tuple[int, float]]] = {}  # guarded by _lock
        self._last_rowid = 0

    def read(self, db: sqlite3.Connection) -> dict[str, list[tuple[int, float]]]:
        """Bring the points up to date from ``db``; per source, oldest first."""
        with self._lock:
            top = int(db.execute("SELECT max(rowid) FROM records").fetchone()[0] or 0)
            if top < self._last_rowid:  # a new store at the same path
                self._points.clear()
                self._last_rowid = 0
            if top > self._last_rowid:
                rows = db.execute(_SELECT, (self._last_rowid, self.read_at_most)).fetchall()
                for _, source, ts, ratio in reversed(rows):
                    if isinstance(ratio, (int, float)) and ts is not None:
                        points = self._points.get(source)
                        if points is None:
                            points = self._points[source] = deque(maxlen=self.keep)
                        points.append((int(ts), float(ratio)))
                self._last_rowid = top
            # by capture time; frames of one time stay in the order they were stored
            by_ts = {s: sorted(p, key=lambda point: point[0]) for s, p in self._points.items()}
            return by_ts


def panel(
    health: Sequence[Mapping[str, Any]], motion: Mapping[str, Sequence[tuple[int, float]]]
) -> list[dict[str, Any]]:
    """One row per camera known to a capture's /metrics or with motion in the store.

    ``health`` is :func:`~imgstream.dashboard.scrape.camera_health` of the
    newest scrape; motion points become ``[seconds, ratio]`` (chart time).
    """
    by_name = {str(h["camera"]): h for h in health}
    names = sorted(set(by_name) | set(motion))[:MAX_CAMERAS]
    rows = []
    for name in names:
        h = by_name.get(name, {})
        points = motion.get(name, ())
        rows.append(
            {
                "camera": name,
                "connected": h.get("connected"),
                "fps": h.get("fps"),
                "last_frame_age_s": h.get("last_frame_age_s"),
                "dropped": h.get("dropped"),
                "motion": [[ts / 1000, ratio] for ts, ratio in points],
                "motion_now": points[-1][1] if points else None,
            }
        )
    return rows
