"""Workers' and captures' ``/metrics`` for the dashboard: throughput, latency, lag, cameras.

A small reader of the Prometheus text exposition (only the sample lines the
dashboard needs; ``prometheus_client`` stays in :mod:`imgstream.metrics`).
:class:`Scraper` keeps the newest scrapes in a bounded ring; the per-scrape
rates are differences of counters between two scrapes. A capture's
``/metrics`` (``capture --metrics-port``) gives each camera's health: whether
it is connected, frames stored per second, seconds since its last frame,
frames dropped. Time is injected.
"""

from __future__ import annotations

import itertools
import re
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
#: Bytes read from one /metrics answer at most.
MAX_BYTES = 4 << 20

Labels = tuple[tuple[str, str], ...]


def parse_exposition(text: str) -> dict[str, dict[Labels, float]]:
    """Samples by metric name, then by sorted label pairs."""
    out: dict[str, dict[Labels, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(3) or "")))
        out.setdefault(m.group(1), {})[labels] = value
    return out


def metrics_url(url: str) -> str:
    """``http://host:port`` becomes ``http://host:port/metrics``; only http(s) is allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url}: not an http(s) URL")
    return url if parts.path not in ("", "/") else url.rstrip("/") + "/metrics"


@dataclass
class Scrape:
    """One round over every URL: summed counters and lag per partition."""

    t: float
    images: float = 0.0
    failed: float = 0.0
    latency_sum_s: float = 0.0
    latency_count: float = 0.0
    lag: dict[str, float] = field(default_factory=dict)
    #: Per camera: ``connected``, ``age_s``, ``reconnects`` and frames by outcome.
    cameras: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


#: Camera series of a capture's /metrics, and their keys in :attr:`Scrape.cameras`.
_CAMERA_SERIES = {
    "imgstream_camera_connected": "connected",
    "imgstream_camera_last_frame_age_seconds": "age_s",
    "imgstream_camera_reconnects_total": "reconnects",
}


def summarise(t: float, texts: Sequence[str | Exception]) -> Scrape:
    """Fold the exposition texts of every worker into one Scrape."""
    s = Scrape(t)
    for text in texts:
        if isinstance(text, Exception):
            s.errors.append(str(text)[:200])
            continue
        m = parse_exposition(text)
        for labels, v in m.get("imgstream_images_total", {}).items():
            if dict(labels).get("status") == "ok":
                s.images += v
            else:
                s.failed += v
        s.latency_sum_s += sum(m.get("imgstream_end_to_end_latency_seconds_sum", {}).values())
        s.latency_count += sum(m.get("imgstream_end_to_end_latency_seconds_count", {}).values())
        for labels, v in m.get("imgstream_consumer_lag_messages", {}).items():
            d = dict(labels)
            key = f"{d.get('topic', '?')}/{d.get('partition', '?')}"
            s.lag[key] = s.lag.get(key, 0.0) + v
        for name, key in _CAMERA_SERIES.items():
            for labels, v in m.get(name, {}).items():
                camera = dict(labels).get("camera")
                if camera is not None:
                    s.cameras.setdefault(camera, {})[key] = v
        for labels, v in m.get("imgstream_camera_frames_total", {}).items():
            d = dict(labels)
            if "camera" in d and "outcome" in d:
                s.cameras.setdefault(d["camera"], {})[d["outcome"]] = v
    return s


def camera_health(before: Scrape | None, last: Scrape) -> list[dict[str, Any]]:
    """Each camera of the newest scrape: connected, frames stored per second since the
    scrape ``before``, seconds since its last frame, frames dropped (None: not known)."""
    out = []
    for name, c in sorted(last.cameras.items()):
        fps = None
        old = before.cameras.get(name) if before is not None else None
        if before is not None and old is not None and last.t > before.t:
            stored = c.get("stored", 0.0) - old.get("stored", 0.0)
            fps = round(stored / (last.t - before.t), 2) if stored >= 0 else None
        out.append(
            {
                "camera": name,
                "connected": bool(c["connected"]) if "connected" in c else None,
                "fps": fps,
                "last_frame_age_s": c.get("age_s"),
                "dropped": c.get("dropped"),
                "reconnects": c.get("reconnects"),
            }
        )
    return out


def fetch(url: str, timeout_s: float = 2.0) -> str | Exception:
    """The body of one /metrics URL, or the error."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return str(resp.read(MAX_BYTES).decode("utf-8", "replace"))
    except (OSError, urllib.error.URLError, ValueError) as exc:
        return exc


class Scraper:
    """Scrapes the URLs every ``interval_s`` on its own thread; keeps ``keep`` scrapes."""

    def __init__(
        self,
        urls: Sequence[str],
        clock: Callable[[], float],
        interval_s: float = 2.0,
        keep: int = 900,
        get: Callable[[str], str | Exception] = fetch,
    ) -> None:
        self.urls = [metrics_url(u) for u in urls]
        self.clock = clock
        self.interval_s = interval_s
        self.get = get
        self._lock = threading.Lock()
        self._ring: deque[Scrape] = deque(maxlen=keep)  # written by the scraping thread only
        self._stop = threading.Event()

    def scrape_once(self) -> Scrape:
        """Scrape every URL now and keep the result."""
        s = summarise(self.clock(), [self.get(u) for u in self.urls])
        with self._lock:
            self._ring.append(s)
        return s

    def start(self) -> None:
        """Scrape until :meth:`stop` (daemon thread)."""

        def loop() -> None:
            while not self._stop.is_set():
                self.scrape_once()
                self._stop.wait(self.interval_s)

        threading.Thread(target=loop, name="dashboard-scraper", daemon=True).start()

    def stop(self) -> None:
        """Stop scraping."""
        self._stop.set()

    def state(self) -> dict[str, Any]:
        """Per-scrape series (rates between scrapes) and the newest lag per partition."""
        with self._lock:
            ring = list(self._ring)
        points = []
        for a, b in itertools.pairwise(ring):
            dt = b.t - a.t
            if dt <= 0 or b.errors:
                continue
            images = max(0.0, (b.images + b.failed) - (a.images + a.failed))
            n = b.latency_count - a.latency_count
            lat = (b.latency_sum_s - a.latency_sum_s) / n * 1000 if n > 0 else None
            points.append({"t": b.t, "images_per_s": images / dt, "mean_latency_ms": lat})
        last = ring[-1] if ring else None
        before = ring[-2] if len(ring) >= 2 else None
        return {
            "urls": self.urls,
            "series": points,
            "lag": dict(sorted(last.lag.items())) if last else {},
            "cameras": camera_health(before, last) if last else [],
            "errors": last.errors if last else [],
        }
