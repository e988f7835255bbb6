"""The dashboard's routes as plain calls: a request path in, a :class:`Response` out.

No sockets here (see :mod:`imgstream.dashboard.server`), so every route is
tested by calling :meth:`Dashboard.handle`. Only ``GET``/``HEAD`` of the
routes below answer; anything else is 404:

- ``/`` the page; ``/image/ID[?p=HASH]`` the page of one record (404 unless
  a record has that id); ``/static/NAME`` the page's own files (a fixed list);
- ``/api/state[?failure_type=T]`` everything the page shows, in one answer;
  ``/api/totals``, ``/api/series``, ``/api/sources``, ``/api/failures[?type=T]``,
  ``/api/tiles``, ``/api/metrics``, ``/api/cameras``, ``/api/record?id=ID[&p=HASH]``;
- ``/media?id=ID&p=HASH&side=in|out[&w=PX]`` a JPEG thumbnail of a record's
  input or output (see :mod:`imgstream.dashboard.media` for what may be read).
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from imgstream.dashboard import queries
from imgstream.dashboard.cameras import MotionTail, panel
from imgstream.dashboard.db import connect_readonly
from imgstream.dashboard.media import MediaResolver, NotServed, ThumbnailCache
from imgstream.dashboard.scrape import Scraper
from imgstream.dashboard.tail import Tail

_STATIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".LICENSE": "text/plain; charset=utf-8",
}
#: How long an unchanged store's state answer is reused (ms).
STATE_REUSE_MS = 1500
#: The page runs only its own scripts and talks only to this server.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass
class Response:
    """Status, content type, body and extra headers of one answer."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def not_found(why: str = "not found") -> Response:
    """A plain 404."""
    return Response(404, "text/plain; charset=utf-8", (why + "\n").encode())


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as null (JSON has no spelling for them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def json_response(obj: Any) -> Response:
    """A JSON answer, never cached."""
    try:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a record stored with NaN in it
        text = json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False)
    body = text.encode()
    return Response(200, "application/json", body, {"Cache-Control": "no-store"})


def load_static() -> dict[str, bytes]:
    """The page's files, shipped as package data (read once, at start)."""
    files: dict[str, bytes] = {}
    for entry in resources.files("imgstream.dashboard").joinpath("static").iterdir():
        if entry.is_file() and _STATIC_NAME.match(entry.name):
            files[entry.name] = entry.read_bytes()
    return files


class Dashboard:
    """Answers the routes over one store (read-only), its images and optional scrapes."""

    def __init__(
        self,
        db_path: str,
        resolver: MediaResolver,
        wall_ms: Callable[[], int],
        scraper: Scraper | None = None,
        thumbs: ThumbnailCache | None = None,
    ) -> None:
        self.db_path = db_path
        self.resolver = resolver
        self.wall_ms = wall_ms
        self.scraper = scraper
        self.thumbs = thumbs if thumbs is not None else ThumbnailCache(resolver)
        self.static = load_static()
        self.tail = Tail()
        self.motion = MotionTail()
        #: The last state answer, reused while the store is unchanged (for STATE_REUSE_MS).
        self._state_cache: tuple[tuple[int, str | None], int, dict[str, Any]] | None = None
        self._state_lock = threading.Lock()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = connect_readonly(self.db_path)
        try:
            yield db
        finally:
            db.close()

    def handle(self, target: str) -> Response:
        """Answer a GET of ``target`` (path and query string as sent)."""
        parts = urlsplit(target)
        path = parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/") :])
        if path.startswith("/image/"):
            return self._image_page(unquote(path[len("/image/") :]), query.get("p"))
        if path == "/media":
            return self._media(query)
        if path.startswith("/api/"):
            return self._api(path[len("/api/") :], query)
        return not_found()

    def _static(self, name: str) -> Response:
        body = self.static.get(name) if _STATIC_NAME.match(name) else None
        if body is None:
            return not_found()
        ext = os.path.splitext(name)[1] or name
        ctype = _TYPES.get(ext, "application/octet-stream")
        return Response(200, ctype, body, {"Cache-Control": "no-cache"})

    def _image_page(self, ref_id: str, phash: str | None) -> Response:
        with self._db() as db:
            found = ref_id and queries.record(db, ref_id, phash) is not None
        return self._static("image.html") if found else not_found("no such record")

    def _media(self, query: Mapping[str, str]) -> Response:
        side, ref_id = query.get("side"), query.get("id")
        if side not in ("in", "out") or not ref_id:
            return not_found()
        try:
            width = int(query["w"]) if "w" in query else None
        except ValueError:
            return not_found()
        with self._db() as db:
            found = queries.record(db, ref_id, query.get("p"))
        if found is None or found["record"].get("kind") != "result":
            return not_found("no such result")
        rec = found["record"]
        uri = rec.get("uri") if side == "in" else rec.get("output_uri")
        try:
            body = self.thumbs.get(side, uri, width)
        except NotServed as exc:
            return not_found(str(exc))
        return Response(200, "image/jpeg", body, {"Cache-Control": "private, max-age=60"})

    def with_media(self, item: dict[str, Any] | None) -> dict[str, Any] | None:
        """An image item with whether its input and output can be shown."""
        if item is None:
            return None
        item["has_in"] = self.resolver.can_serve("in", item.get("uri"))
        item["has_out"] = self.resolver.can_serve("out", item.get("output_uri"))
        return item

    def state(self, failure_type: str | None = None) -> dict[str, Any]:
        """Everything the page shows, read in one read transaction (one consistent view).

        Several viewers polling an unchanged store share one answer for up to
        STATE_REUSE_MS (only "images/s now" would differ, by the time that passed).
        """
        now = self.wall_ms()
        with self._db() as db:
            db.execute("BEGIN")
            key = (queries.version(db), failure_type)
            with self._state_lock:
                cached = self._state_cache
            if cached is not None and cached[0] == key and 0 <= now - cached[1] < STATE_REUSE_MS:
                db.execute("COMMIT")
                return cached[2]
            out: dict[str, Any] = {
                "version": key[0],
                "now": now,
                "db": os.path.abspath(self.db_path),
                "totals": queries.totals(db, now, self.tail),
                "series": queries.series(db),
                "sources": queries.sources(db),
                "failures": queries.failures(db, failure_type),
                "tiles": queries.tiled(db),
            }
            motion = self.motion.read(db)
            db.execute("COMMIT")
        for src in out["sources"]:
            src["latest"] = [self.with_media(i) for i in src["latest"]]
        for t in out["tiles"]:
            t["fused"] = self.with_media(t["fused"])
        out["metrics"] = self.scraper.state() if self.scraper is not None else None
        out["cameras"] = self.cameras(out["metrics"], motion)
        with self._state_lock:
            self._state_cache = (key, now, out)
        return out

    def cameras(
        self,
        metrics: Mapping[str, Any] | None,
        motion: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The cameras panel: health from ``metrics`` (a scrape), motion from the store."""
        if motion is None:
            with self._db() as db:
                motion = self.motion.read(db)
        return panel(metrics["cameras"] if metrics else [], motion)

    def _api(self, name: str, query: Mapping[str, str]) -> Response:
        if name == "state":
            state = dict(self.state(query.get("failure_type") or None))
            if self.scraper is not None:  # scrapes are fresher than the cached state
                state["metrics"] = self.scraper.state()
                state["cameras"] = self.cameras(state["metrics"])
            return json_response(state)
        if name == "metrics":
            return json_response(self.scraper.state() if self.scraper is not None else None)
        if name == "cameras":
            return json_response(self.cameras(self.scraper.state() if self.scraper else None))
        with self._db() as db:
            if name == "totals":
                return json_response(queries.totals(db, self.wall_ms(), self.tail))
            if name == "series":
                return json_response(queries.series(db))
            if name == "sources":
                return json_response(queries.sources(db))
            if name == "failures":
                return json_response(queries.failures(db, query.get("type") or None))
            if name == "tiles":
                return json_response(queries.tiled(db))
            if name == "record":
                found = queries.record(db, query.get("id") or "", query.get("p"))
                if found is None:
                    return not_found("no such record")
                found["item"] = self.with_media(found["item"])
                return json_response(found)
        return not_found()
