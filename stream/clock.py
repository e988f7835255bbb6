"""Clocks: the only source of time for logic that depends on it.

Logic takes a :class:`Clock`; production code passes :class:`SystemClock`,
tests a :class:`FakeClock` they advance by hand (no sleeps).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds for deadlines, wall milliseconds for timestamps."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """Seconds from :func:`time.monotonic`."""
        return time.monotonic()

    def wall_ms(self) -> int:
        """Milliseconds from :func:`time.time`."""
        return int(time.time() * 1000)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0, wall_ms: int = 1_700_000_000_000) -> None:
        self._now = start
        self._wall0 = wall_ms
        self._start = start

    def monotonic(self) -> float:
        """The current fake time."""
        return self._now

    def wall_ms(self) -> int:
        """Wall time that moves with the fake monotonic time."""
        return self._wall0 + int((self._now - self._start) * 1000)

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds
