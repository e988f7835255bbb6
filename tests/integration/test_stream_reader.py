"""StreamReader against real servers on loopback: ffmpeg's live HTTP MPEG-TS stream
(killed, restarted, frozen), a socket that never answers, and a server refusing passwords.

No broker: the reader runs in a thread of the test, and its health reports
are recorded. The timings measured are printed (``-s``) for the report.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from imgstream.clock import SystemClock
from imgstream.producers.video.stream_reader import Backoff, Frame, StreamReader, Timeouts
from tests.helpers import wait_until


class Recorder:
    """A StreamHealth that keeps every report with its time."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, Any]] = []

    def connected(self, width: int, height: int) -> None:
        self.events.append((time.monotonic(), "connected", (width, height)))

    def disconnected(self, reason: str) -> None:
        self.events.append((time.monotonic(), "disconnected", reason))

    def reconnecting(self) -> None:
        self.events.append((time.monotonic(), "reconnecting", None))

    def gap(self, seconds: float) -> None:
        self.events.append((time.monotonic(), "gap", seconds))

    def of(self, kind: str) -> list[tuple[float, str, Any]]:
        return [e for e in self.events if e[1] == kind]


class Reading:
    """A StreamReader running in a thread, its frames collected."""

    def __init__(self, url: str, timeouts: Timeouts) -> None:
        self.health = Recorder()
        self.stop = threading.Event()
        self.frames: list[Frame] = []
        self.reader = StreamReader(
            "cam",
            url,
            SystemClock(),
            self.health,
            self.stop.is_set,
            self.stop.wait,
            timeouts,
            Backoff(0.2, 1.0),
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for frame in self.reader.frames():
            self.frames.append(frame)

    def close(self) -> float:
        """Stop the reader; seconds it took to return."""
        started = time.monotonic()
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the reader did not stop"
        return time.monotonic() - started


def test_reader_reconnects_after_the_server_comes_back(stream_server, clip) -> None:
    server = stream_server(clip)
    reading = Reading(server.url, Timeouts(open_s=3, read_s=2))
    try:
        wait_until(lambda: len(reading.frames) >= 25, 60, what="frames before the outage")
        server.kill()
        killed = time.monotonic()
        before = len(reading.frames)
        wait_until(lambda: reading.health.of("disconnected"), 30, what="the drop noticed")
        detected = reading.health.of("disconnected")[0][0] - killed
        time.sleep(3)
        server.start()
        restarted = time.monotonic()
        wait_until(lambda: len(reading.frames) > before + 25, 60, what="frames after the outage")
        (gap,) = reading.health.of("gap")
    finally:
        stopped_in = reading.close()
    (first_after,) = [f for f in reading.frames if f.gap_s is not None]
    back_in = first_after.mono - restarted
    print(
        f"\ndrop noticed in {detected:.2f}s; frames back {back_in:.2f}s after the restart; "
        f"gap {gap[2]:.2f}s; stop took {stopped_in:.2f}s"
    )
    assert detected < 3
    assert first_after.gap_s is not None and first_after.gap_s >= 3
    assert gap[2] == first_after.gap_s and first_after.mono > restarted
    assert len(reading.health.of("connected")) == 2
    assert reading.reader.reconnects >= 1
    stamps = [f.wall_ms for f in reading.frames]
    assert stamps == sorted(stamps), "capture times go back"


def test_a_frozen_stream_is_noticed_within_the_read_timeout(stream_server, clip) -> None:
    server = stream_server(clip)
    reading = Reading(server.url, Timeouts(open_s=3, read_s=2))
    try:
        wait_until(lambda: len(reading.frames) >= 10, 60, what="frames")
        server.pause()
        paused = time.monotonic()
        (down,) = wait_until(lambda: reading.health.of("disconnected"), 30, what="the stall")
    finally:
        server.resume()
        reading.close()
    stalled_for = down[0] - paused
    print(f"\nstall noticed {stalled_for:.2f}s after the server froze (read timeout 2s)")
    assert "no frame within 2s" in down[2]
    # Frames already buffered are still read first, so a little over the timeout.
    assert stalled_for < 2 + 3


def test_a_socket_that_never_answers_times_out(silent_server) -> None:
    reading = Reading(silent_server, Timeouts(open_s=2, read_s=2))
    started = time.monotonic()
    try:
        (down,) = wait_until(lambda: reading.health.of("disconnected")[:1], 30, what="a failure")
        wait_until(lambda: reading.health.of("reconnecting"), 30, what="a retry")
    finally:
        stopped_in = reading.close()
    print(f"\nsilent server: failure after {down[0] - started:.2f}s; stop took {stopped_in:.2f}s")
    assert "no answer within 2s" in down[2]
    assert down[0] - started < 2 + 3
    assert not reading.frames and not reading.health.of("connected")


def test_a_refused_password_is_named_and_never_shown(unauthorized_server) -> None:
    url = unauthorized_server.replace("http://", "http://viewer:Sesame-42@")
    reading = Reading(url, Timeouts(open_s=3, read_s=2))
    try:
        (down,) = wait_until(lambda: reading.health.of("disconnected")[:1], 30, what="a failure")
    finally:
        reading.close()
    assert "HTTP 401" in down[2] and "viewer:***@" in down[2]
    assert "Sesame-42" not in down[2]


def test_an_open_held_back_behind_a_silent_camera_still_names_its_own_cause(
    silent_server, unauthorized_server
) -> None:
    """OpenCV opens one FFmpeg stream at a time per process: a camera refusing the
    password, opened while another camera waits on a server that never answers,
    waits too. Its failure must name the 401, not a timeout it did not have."""
    silent = Reading(silent_server, Timeouts(open_s=3, read_s=2))
    time.sleep(0.3)  # the silent camera's open is under way
    url = unauthorized_server.replace("http://", "http://viewer:Sesame-42@")
    refused = Reading(url, Timeouts(open_s=3, read_s=2))
    try:
        (down,) = wait_until(lambda: refused.health.of("disconnected")[:1], 30, what="a failure")
    finally:
        refused.close()
        silent.close()
    print(f"\nthe refused camera's first failure: {down[2]}")
    assert "HTTP 401" in down[2], down[2]
