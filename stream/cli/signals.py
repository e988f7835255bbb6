"""Stopping long-running commands cleanly on SIGTERM and SIGINT.

A command that loops (a broker, a watch, an aggregator) asks for an event
that the first signal sets; it finishes its current step and returns, so
Ctrl-C and ``docker stop`` both end in a clean shutdown.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (installs the handlers; main thread only)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
