"""``imgstream dashboard``: a read-only live web page over the aggregator's result store.

Modules, one concept each: :mod:`~imgstream.dashboard.db` (opening the store
read-only), :mod:`~imgstream.dashboard.queries` (the questions, as JSON-ready
data), :mod:`~imgstream.dashboard.media` (which image files may be shown;
bounded, cached thumbnails), :mod:`~imgstream.dashboard.scrape` (workers' and
captures' ``/metrics``), :mod:`~imgstream.dashboard.cameras` (the cameras
panel: health from captures, motion from the store),
:mod:`~imgstream.dashboard.app` (routes as plain calls),
:mod:`~imgstream.dashboard.server` (HTTP). The page itself is in ``static/``
(plain DOM code and the vendored uPlot chart library); it polls
``/api/state`` every two seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from imgstream.dashboard.app import Dashboard
from imgstream.dashboard.db import check_store
from imgstream.dashboard.media import MediaResolver, Roots
from imgstream.dashboard.scrape import Scraper
from imgstream.dashboard.server import DashboardServer

__all__ = ["Dashboard", "DashboardServer", "build_server"]


def build_server(
    db_path: str,
    host: str = "127.0.0.1",
    port: int = 0,
    roots: Sequence[str] = (),
    metrics: Sequence[str] = (),
) -> DashboardServer:
    """A bound (not yet serving) dashboard server; ConfigError for a bad store or address."""
    import time

    from imgstream.clock import SystemClock

    check_store(db_path)
    clock = SystemClock()
    scraper = Scraper(metrics, time.time) if metrics else None
    dashboard = Dashboard(
        db_path, MediaResolver(Roots.for_store(db_path, roots)), clock.wall_ms, scraper
    )
    server = DashboardServer(host, port, dashboard)
    if scraper is not None:
        scraper.start()
    # the first answer reads the newest records once (see tail.py): do it now, not
    # while the first viewer waits
    threading.Thread(target=dashboard.state, name="dashboard-warm", daemon=True).start()
    return server
