"""Cameras: the TOML file, URL redaction, back-off, the reader's reconnection logic and
the camera metrics (fakes and a fake clock; no streams, no sleeps)."""

from __future__ import annotations

import logging
import random
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import numpy as np
import pytest

from imgstream.clock import FakeClock
from imgstream.errors import ConfigError
from imgstream.metrics import CameraMetrics, camera_health
from imgstream.producers.cameras import Camera, parse_cameras, redact_url, secrets_of
from imgstream.producers.capture import run_camera
from imgstream.producers.frames import FrameWriter
from imgstream.producers.stream_reader import Backoff, StreamReader, Timeouts

EXAMPLE = """
[defaults]
fps = 2
max_width = 640

[[camera]]
name = "gate"
url = "rtsp://viewer:${GATE_PASSWORD}@10.0.0.5/stream1"
fps = 5

[[camera]]
name = "door"
url = "http://10.0.0.6/live.ts"
quality = 70
"""


def test_the_example_file() -> None:
    gate, door = parse_cameras(EXAMPLE, {"GATE_PASSWORD": "s3cret"})
    assert gate == Camera("gate", "rtsp://viewer:s3cret@10.0.0.5/stream1", 5, 640, 90)
    assert door == Camera("door", "http://10.0.0.6/live.ts", 2, 640, 70)
    assert "s3cret" not in repr(gate) and gate.safe_url == "rtsp://viewer:***@10.0.0.5/stream1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no [[camera]] table"),
        ("[[camera]]\nname = 'a'\n", "url is required"),
        ("[[camera]]\nurl = 'http://x'\n", "name is required"),
        ("[[camera]]\nname='a'\nurl='http://x'\ncolour=1\n", "unknown key 'colour' (valid: name"),
        ("[defaults]\nurl='http://x'\n", "unknown key 'url' (valid: fps, max_width, quality)"),
        ("[camera]\nname='a'\n", "use [[camera]]"),
        ("[[camera]]\nname='a'\nurl='http://x'\nfps=0\n", "fps must be positive"),
        ("[[camera]]\nname='a'\nurl='http://x'\nfps='2'\n", "fps must be a number"),
        ("[[camera]]\nname='a'\nurl='http://x'\nquality=101\n", "quality must be an integer"),
        ("[[camera]]\nname='a'\nurl='http://x'\nmax_width=8\n", "max_width must be an integer"),
        ("[[camera]]\nname='a b'\nurl='http://x'\n", "name 'a b' must be letters"),
        ("[[camera]]\nname='a'\nurl='x'\n[[camera]]\nname='a'\nurl='y'\n", "two cameras"),
        ("[[camera]]\nname='a'\nurl='http://u:${NOPE}@x'\n", "variable NOPE is not set"),
        ("[cameras]\n", "unknown table 'cameras'"),
        ("[[camera]\n", "not valid TOML"),
    ],
)
def test_refused_files_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_cameras(text, {}, origin="cams.toml")
    assert message in str(info.value) and str(info.value).startswith("cams.toml")


def test_a_missing_variable_does_not_show_the_url() -> None:
    with pytest.raises(ConfigError) as info:
        parse_cameras("[[camera]]\nname='a'\nurl='rtsp://u:hunter2@x/${PATH_PART}'\n", {})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://viewer:pa:ss@10.0.0.5:554/s1", "rtsp://viewer:***@10.0.0.5:554/s1"),
        ("http://u:p%40ss@h/live.ts?x=1", "http://u:***@h/live.ts?x=1"),
        ("http://h/live?user=a&password=b&x=1", "http://h/live?user=a&password=***&x=1"),
        ("rtsp://h/s?token=abc", "rtsp://h/s?token=***"),
        ("rtsp://viewer@h/s", "rtsp://viewer@h/s"),
        ("http://h/live.ts", "http://h/live.ts"),
        ("0", "0"),
        ("/videos/a.mp4", "/videos/a.mp4"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_secrets_of() -> None:
    assert secrets_of("rtsp://a:b@h/") == ["b"] and secrets_of("rtsp://h/") == []
    assert secrets_of("http://u:p@h/x?token=t1&pwd=t2&n=1") == ["p", "t1", "t2"]
    # as written in the URL, and as the server (or a library's log) sees it
    assert secrets_of("rtsp://u:p%40ss%C3%BC@h/") == ["p%40ss%C3%BC", "p@ssü"]


#: Passwords (and user names) that end the host early, or break the URL, unless encoded.
NASTY = ["s3/cr#t", "pa?ss", "p@ss@", "100%", "pa:ss:", "pässwörd€", "a/b?c#d@e%f:g ü"]


def _one_camera(url: str, env: dict[str, str]) -> Camera:
    [camera] = parse_cameras(f'[[camera]]\nname = "gate"\nurl = "{url}"\n', env)
    return camera


def _shown(camera: Camera) -> list[str]:
    """What of a camera reaches logs, errors and tracebacks."""
    return [repr(camera), camera.safe_url, str(camera)]


@pytest.mark.parametrize("password", NASTY)
def test_a_substituted_password_is_encoded_in_the_url_and_shown_nowhere(password) -> None:
    camera = _one_camera(
        "rtsp://viewer:${GATE_PASSWORD}@10.0.0.5/stream1", {"GATE_PASSWORD": password}
    )
    # The URL OpenCV/FFmpeg get: the user info percent-encoded, as URL parsers expect.
    assert camera.url == f"rtsp://viewer:{quote(password, safe='')}@10.0.0.5/stream1"
    parts = urlsplit(camera.url)
    assert (parts.hostname, parts.path) == ("10.0.0.5", "/stream1")
    assert (unquote(parts.username or ""), unquote(parts.password or "")) == ("viewer", password)
    assert camera.safe_url == "rtsp://viewer:***@10.0.0.5/stream1"
    for text in _shown(camera):
        assert password not in text and quote(password, safe="") not in text
    assert {password, quote(password, safe="")} <= set(camera.secrets())


@pytest.mark.parametrize("user", NASTY)
def test_a_substituted_user_name_is_encoded_and_hidden_too(user) -> None:
    env = {"CAM_USER": user, "CAM_PASSWORD": "pw#1"}
    camera = _one_camera("rtsp://${CAM_USER}:${CAM_PASSWORD}@10.0.0.5:8554/s", env)
    assert camera.url == f"rtsp://{quote(user, safe='')}:pw%231@10.0.0.5:8554/s"
    parts = urlsplit(camera.url)
    assert (parts.hostname, parts.port, unquote(parts.username or "")) == ("10.0.0.5", 8554, user)
    assert camera.safe_url == "rtsp://***:***@10.0.0.5:8554/s"
    for text in _shown(camera):
        assert user not in text and "pw#1" not in text


def test_literal_user_info_and_the_rest_of_the_url_are_left_as_written() -> None:
    env = {"HOST": "10.0.0.5", "P": "a/b", "CH": "2", "TOKEN": "t&k#n"}
    camera = _one_camera("http://me:x%2Fy${P}@${HOST}:8080/live/${CH}.ts?token=${TOKEN}&n=1", env)
    assert camera.url == "http://me:x%2Fya%2Fb@10.0.0.5:8080/live/2.ts?token=t%26k%23n&n=1"
    assert camera.safe_url == "http://me:***@10.0.0.5:8080/live/2.ts?token=***&n=1"
    hidden = ("a/b", "a%2Fb", "t&k#n", "t%26k%23n")
    assert not [s for s in hidden for text in _shown(camera) if s in text]
    assert "10.0.0.5" not in camera.secrets()  # only credentials and query values are secret


def test_a_reader_refused_with_a_substituted_password_logs_no_part_of_it(caplog) -> None:
    # The report: "camera gate: cannot open rtsp://viewer:s3/cr#t@10.0.0.5/stream1: ..."
    camera = _one_camera(
        "rtsp://viewer:${GATE_PASSWORD}@10.0.0.5/stream1", {"GATE_PASSWORD": "s3/cr#t"}
    )
    clock = FakeClock()
    script = Script(clock, [FakeCapture(False, 0)], 0.1)
    reader = StreamReader(
        camera.name, camera.url, clock, CameraMetrics().camera("gate", clock.monotonic),
        lambda: False, script.wait, backoff=Backoff(1.0, 1.0, jitter=0.0),
        opener=script.open, diagnose=lambda url, elapsed, t: "connection refused",
        secrets=camera.secrets(),
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="imgstream.capture"):
        assert list(reader.frames()) == []
    assert "camera gate: cannot open rtsp://viewer:***@10.0.0.5/stream1: connection refused" in (
        caplog.text
    )
    assert "s3" not in caplog.text and "cr" not in caplog.text


@pytest.mark.parametrize(
    ("url", "shown", "secret"),
    [
        # Typed on the command line without encoding: the host ends early, at the
        # '/', '#' or '?' in the password, and its rest lands in the path.
        ("rtsp://viewer:s3/cr#t@10.0.0.5/stream1", "rtsp://viewer:***@10.0.0.5/stream1", "s3/cr#t"),
        ("rtsp://viewer:12/x@10.0.0.5/s", "rtsp://viewer:***@10.0.0.5/s", "12/x"),
        ("http://u:p?a@h/live.ts", "http://u:***@h/live.ts", "p?a"),
        ("http://u:p#a@h:80/live.ts", "http://u:***@h:80/live.ts", "p#a"),
    ],
)
def test_a_password_that_breaks_its_url_is_still_hidden(url, shown, secret) -> None:
    assert redact_url(url) == shown
    assert secret in secrets_of(url)
    assert secret not in repr(Camera("gate", url))


def test_backoff_doubles_up_to_its_ceiling_with_jitter() -> None:
    b = Backoff(0.5, 4.0, jitter=0.2, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(6)]
    for delay, base in zip(delays, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert len(set(delays)) == 6  # jittered: cameras that dropped together spread out
    b.reset()
    assert 0.4 <= b.next_delay() <= 0.6
    with pytest.raises(ValueError):
        Backoff(0, 1)


class FakeCapture:
    """A VideoCapture that opens or not, then gives ``frames`` frames and fails."""

    def __init__(self, opens: bool, frames: int) -> None:
        self.opens = opens
        self.left = frames
        self.released = False

    def isOpened(self) -> bool:
        return self.opens

    def get(self, prop: int) -> float:
        return 8.0

    def grab(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def retrieve(self) -> tuple[bool, Any]:
        return True, np.zeros((8, 8, 3), np.uint8)

    def release(self) -> None:
        self.released = True


class Script:
    """The reader's world: each open takes the next capture; waits move the fake clock."""

    def __init__(self, clock: FakeClock, captures: list[FakeCapture], frame_s: float) -> None:
        self.clock = clock
        self.captures = captures
        self.frame_s = frame_s
        self.waits: list[float] = []
        self.opened: list[FakeCapture] = []

    def open(self, url: str, timeouts: Timeouts) -> FakeCapture:
        cap = self.captures.pop(0) if self.captures else FakeCapture(False, 0)
        self.opened.append(cap)
        original = cap.grab

        def timed_grab() -> bool:
            self.clock.advance(self.frame_s)
            return original()

        cap.grab = timed_grab  # type: ignore[method-assign]
        return cap

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.clock.advance(seconds)
        return not self.captures  # stop once the script is played


def test_reader_reconnects_reports_the_gap_and_stops() -> None:
    clock = FakeClock()
    script = Script(clock, [FakeCapture(True, 3), FakeCapture(False, 0), FakeCapture(True, 2)], 0.1)
    metrics = CameraMetrics()
    health = metrics.camera("gate", clock.monotonic)
    reader = StreamReader(
        "gate",
        "rtsp://u:pw@h/s",
        clock,
        health,
        lambda: False,
        script.wait,
        Timeouts(3, 2),
        Backoff(1.0, 8.0, jitter=0.0),
        opener=script.open,
        diagnose=lambda url, elapsed, t: "connection refused",
    )
    frames = list(reader.frames())
    assert len(frames) == 5
    assert [f.gap_s is not None for f in frames] == [False] * 3 + [True, False]
    # The last frame before the drop at t=0.3; the drop noticed at 0.4, back-off 1 s,
    # a refused open, back-off 2 s (then reset), the first frame back 0.1 s later.
    assert frames[3].gap_s == pytest.approx(0.1 + 1 + 2 + 0.1)
    assert script.waits == [1.0, 2.0, 1.0]
    assert reader.reconnects == 2 and all(c.released for c in script.opened)
    h = camera_health(metrics.exposition().decode())["gate"]
    assert h["reconnects"] == 2 and h["outages"] == 1 and h["connected"] == 0
    assert h["width"] == 8 and h["height"] == 8


def test_run_camera_samples_by_wall_clock_and_never_repeats_an_id(tmp_path) -> None:
    clock = FakeClock()
    script = Script(clock, [FakeCapture(True, 20), FakeCapture(True, 20)], 0.1)
    metrics = CameraMetrics()
    health = metrics.camera("door", clock.monotonic)
    camera = Camera("door", "http://h/live.ts", fps=2)
    reader = StreamReader(
        "door", camera.url, clock, health, lambda: False, script.wait,
        backoff=Backoff(1.0, 1.0, jitter=0.0), opener=script.open,
        diagnose=lambda url, elapsed, t: "-",
    )  # fmt: skip
    refs: list[Any] = []
    stats = run_camera(
        camera, reader, FrameWriter("door", str(tmp_path), refs.append), health, clock
    )
    # 2 x 2 s of frames at 10/s, kept at 2/s: 4 from the first connection, 5 from the
    # second (its first frame, after the 1 s back-off, is kept at once).
    assert stats.read == 40 and stats.stored == len(refs) == 9
    assert len({r.id for r in refs}) == 9 and all((tmp_path / "door").glob("*.jpg"))
    assert [r.ts for r in refs] == sorted(r.ts for r in refs)
    assert sum(1 for r in refs if "gap_s" in (r.meta or {})) == 1
    h = camera_health(metrics.exposition().decode())["door"]
    assert (h["stored"], h["skipped"], h["failed"]) == (9, 31, 0)
    assert h["last_frame_age_seconds"] == pytest.approx(0.1 + 1.0)  # the failed read, a back-off
