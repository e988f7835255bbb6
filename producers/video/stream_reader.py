"""Reading a live stream that drops, stalls and comes back.

:class:`StreamReader` opens a URL (or a device) through OpenCV's FFmpeg
backend with bounded open and read timeouts, so a stream that never answers
or stops sending is noticed within seconds instead of hanging a thread; it
yields frames with their capture time, and when the stream fails it reopens
it after an exponential back-off with jitter (:class:`Backoff`) until told to
stop. What happens is reported to a :class:`StreamHealth` (the metrics) and
logged, always with the URL's password hidden. The time frames were missing
is reported as a gap when they come back.
"""

from __future__ import annotations

import base64
import http.client
import logging
import random
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from imgstream._cv import cv2
from imgstream.clock import Clock
from imgstream.producers.video.cameras import redact_url

log = logging.getLogger("imgstream.capture")


class Backoff:
    """Delays between reconnection attempts: doubling up to a ceiling, with jitter.

    The jitter (± ``jitter`` of each delay) keeps many cameras that dropped
    together (a switch rebooted) from reconnecting in lockstep.
    """

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 10.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < initial <= max, factor >= 1, 0 <= jitter < 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._next = initial_s

    def next_delay(self) -> float:
        """The next delay in seconds (and grow the one after it)."""
        base = self._next
        self._next = min(self._next * self.factor, self.max_s)
        return base * (1 + self._rng.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        """Start again from the first delay (after a successful connection)."""
        self._next = self.initial_s


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a stream to open, and for each next frame."""

    open_s: float = 10.0
    read_s: float = 5.0


@dataclass(frozen=True)
class Frame:
    """A frame grabbed from the stream, with the time it came.

    Its pixels are converted only when asked for (:meth:`image`), and only
    until the next frame is grabbed: a frame the sampler skips costs no
    colour conversion.
    """

    mono: float
    wall_ms: int
    #: Seconds without frames before this one, when it is the first after an outage.
    gap_s: float | None
    retrieve: Callable[[], tuple[bool, Any]]

    def image(self) -> Any:
        """The BGR pixels, or None when they cannot be had."""
        ok, image = self.retrieve()
        return image if ok else None


class StreamHealth(Protocol):
    """What a reader reports about its stream (implemented by the camera metrics)."""

    def connected(self, width: int, height: int) -> None:
        """The stream is open and frames of this size are coming."""

    def disconnected(self, reason: str) -> None:
        """The stream could not be opened, or stopped giving frames."""

    def reconnecting(self) -> None:
        """Another attempt to open the stream starts."""

    def gap(self, seconds: float) -> None:
        """Frames are back after ``seconds`` without any."""


def open_stream(url: str, timeouts: Timeouts) -> Any:
    """A ``cv2.VideoCapture`` of a device index or a URL, with bounded timeouts."""
    if url.isdigit():
        return cv2.VideoCapture(int(url))
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(timeouts.open_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(timeouts.read_s * 1000),
    ]
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def why_not_opened(url: str, elapsed_s: float, timeouts: Timeouts) -> str:
    """A reason a stream did not open, in a few words (never the password).

    OpenCV only says "not opened"; one small probe of the server tells a
    stream that never answered, a refused connection and a refused password
    apart. The probe runs even when the open took its whole timeout: OpenCV
    opens one FFmpeg stream at a time per process, so an open may have waited
    behind another camera's (a server that never answers holds the others
    back for up to ``open_s``), and the elapsed time alone would blame a
    server that answers at once.
    """
    reason = _probe(url, min(timeouts.open_s, 3.0))
    if reason.startswith("no answer") and elapsed_s >= timeouts.open_s * 0.9:
        return f"no answer within {timeouts.open_s:g}s"
    return reason


def _probe(url: str, probe_s: float) -> str:
    """What one small request to the stream's server says about it."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "not a valid stream URL"
    if url.isdigit() or not host:
        return "the device or file could not be opened"
    scheme = parts.scheme.lower()
    default = {"http": 80, "https": 443, "rtsp": 554, "rtmp": 1935}.get(scheme)
    port = port if port is not None else default
    if port is None:
        return "the stream could not be opened"
    try:
        if scheme in ("http", "https"):
            return _http_reason(parts, host, port, probe_s)
        if scheme == "rtsp":
            return _rtsp_reason(parts, host, port, probe_s)
        with socket.create_connection((host, port), timeout=probe_s):
            pass
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {probe_s:g}s"
    except OSError as exc:
        return f"cannot connect ({exc.strerror or type(exc).__name__})"
    return "the server answered but the stream could not be opened (wrong path or credentials?)"


def _basic_auth(parts: Any) -> dict[str, str]:
    """The Authorization header of a URL's user info (none without one)."""
    if parts.username is None:
        return {}
    user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return {"Authorization": "Basic " + base64.b64encode(user.encode()).decode()}


def _refused(status: int, protocol: str) -> str:
    if status in (401, 403):
        return f"{protocol} {status}: refused (wrong user or password?)"
    if status >= 400:
        return f"{protocol} {status}"
    return f"{protocol} {status}, but not a stream OpenCV can read"


def _rtsp_reason(parts: Any, host: str, port: int, timeout_s: float) -> str:
    """The status of an RTSP DESCRIBE of the stream (user info sent as Basic)."""
    plain = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    lines = [f"DESCRIBE {plain} RTSP/1.0", "CSeq: 1", "Accept: application/sdp"]
    lines += [f"{k}: {v}" for k, v in _basic_auth(parts).items()]
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = sock.recv(1024).decode("latin-1").split("\r\n", 1)[0].split()
    if len(head) >= 2 and head[0].startswith("RTSP/") and head[1].isdigit():
        return _refused(int(head[1]), "RTSP")
    return "the server did not answer as RTSP"


def _http_reason(parts: Any, host: str, port: int, timeout_s: float) -> str:
    """The status of an HTTP GET of the stream (user info sent as Basic)."""
    https = parts.scheme.lower() == "https"
    kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
    conn = kind(host, port, timeout=timeout_s)
    headers = _basic_auth(parts)
    try:
        conn.request("GET", parts.path or "/", headers=headers)
        status = conn.getresponse().status
    finally:
        conn.close()
    return _refused(status, "HTTP")


class StreamReader:
    """Frames of one live stream, reopened with back-off whenever it fails.

    ``wait(seconds)`` sleeps unless the reader is told to stop (it returns
    True then, like ``threading.Event.wait``); ``stopped()`` is checked
    between frames. Used by one thread.
    """

    def __init__(
        self,
        name: str,
        url: str,
        clock: Clock,
        health: StreamHealth,
        stopped: Callable[[], bool],
        wait: Callable[[float], bool],
        timeouts: Timeouts | None = None,
        backoff: Backoff | None = None,
        opener: Callable[[str, Timeouts], Any] = open_stream,
        diagnose: Callable[[str, float, Timeouts], str] = why_not_opened,
        secrets: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.url = url
        #: The URL as logged: its password, and ``secrets`` (the values
        #: substituted into it, see :meth:`Camera.secrets`), as ``***``.
        self.safe_url = redact_url(url, secrets)
        self.clock = clock
        self.health = health
        self.stopped = stopped
        self.wait = wait
        self.timeouts = timeouts if timeouts is not None else Timeouts()
        self.backoff = backoff if backoff is not None else Backoff()
        self.opener = opener
        self.diagnose = diagnose
        #: Attempts to reopen the stream so far.
        self.reconnects = 0

    def frames(self) -> Iterator[Frame]:
        """Frames until stopped; outages in between are retried, reported and logged."""
        last_frame: float | None = None  # when the last frame came; None before the first
        gap_pending = False
        attempt = 0
        while not self.stopped():
            if attempt:
                self.reconnects += 1
                self.health.reconnecting()
            attempt += 1
            started = self.clock.monotonic()
            cap = self.opener(self.url, self.timeouts)
            if not cap.isOpened():
                cap.release()
                reason = self.diagnose(self.url, self.clock.monotonic() - started, self.timeouts)
                self._down(f"cannot open {self.safe_url}: {reason}")
                if self.wait(self.backoff.next_delay()):
                    break
                continue
            width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            self.health.connected(width, height)
            log.info("camera %s: connected to %s (%dx%d)", self.name, self.safe_url, width, height)
            self.backoff.reset()
            reason = "stopped"
            try:
                while not self.stopped():
                    if not cap.grab():
                        reason = f"stream ended, or no frame within {self.timeouts.read_s:g}s"
                        break
                    now = self.clock.monotonic()
                    gap = now - last_frame if gap_pending and last_frame is not None else None
                    if gap is not None:
                        self.health.gap(gap)
                        log.warning("camera %s: frames are back after a %.1fs gap", self.name, gap)
                    gap_pending = False
                    last_frame = now
                    yield Frame(now, self.clock.wall_ms(), gap, cap.retrieve)
            finally:
                cap.release()
            if self.stopped():
                break
            gap_pending = True
            self._down(f"{self.safe_url}: {reason}")
            if self.wait(self.backoff.next_delay()):
                break

    def _down(self, what: str) -> None:
        self.health.disconnected(what)
        log.warning("camera %s: %s; reconnecting with back-off", self.name, what)
