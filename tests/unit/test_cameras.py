"""Cameras: the TOML file and its reloads, URL redaction, back-off, the reader's
reconnection logic, ``--frames latest`` (the one-frame slot, the workers' backlog) and
the camera metrics (fakes and a fake clock; no streams, no sleeps)."""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import numpy as np
import pytest

from imgstream.clock import FakeClock
from imgstream.errors import ConfigError
from imgstream.metrics import CameraMetrics, camera_health
from imgstream.producers.video.backlog import Backlog, follow_commits
from imgstream.producers.video.cameras import (
    Camera,
    CamerasFile,
    diff_cameras,
    parse_cameras,
    redact_url,
    secrets_of,
)
from imgstream.producers.video.capture import Kept, Slot, run_camera
from imgstream.producers.video.frames import FrameWriter
from imgstream.producers.video.live import reload_cameras
from imgstream.producers.video.stream_reader import Backoff, StreamReader, Timeouts

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
        (
            "[defaults]\nurl='http://x'\n",
            "unknown key 'url' (valid: fps, max_width, quality, frames)",
        ),
        ("[[camera]]\nname='a'\nurl='http://x'\nframes='newest'\n", "frames must be one of"),
        ("[defaults]\nframes=1\n[[camera]]\nname='a'\nurl='x'\n", "frames must be one of"),
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


def test_frames_per_camera_or_from_the_defaults_or_from_the_command_line() -> None:
    text = (
        "[defaults]\nframes = 'all'\n\n[[camera]]\nname = 'a'\nurl = 'http://h/1'\n\n"
        "[[camera]]\nname = 'b'\nurl = 'http://h/2'\nframes = 'latest'\n"
    )
    a, b = parse_cameras(text, {})
    assert (a.frames, b.frames) == ("all", "latest")
    (c,) = parse_cameras("[[camera]]\nname = 'c'\nurl = 'http://h/3'\n", {})
    assert c.frames is None  # capture's --frames decides
    changes = diff_cameras([a], [Camera("a", "http://h/1", frames="latest")])
    assert changes.describe([a]) == "restarted a (frames); 0 unchanged"


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


# --- --frames latest: the one-frame slot, the workers' backlog, dropped frames ---------


def test_a_slot_holds_the_newest_frame_only() -> None:
    slot = Slot()
    frames = [Kept(None, ts, ts, {}) for ts in range(3)]
    assert slot.put(frames[0]) is False
    assert slot.put(frames[1]) is True  # frame 0 was never written: dropped
    assert slot.take() is frames[1]
    assert slot.put(frames[2]) is False
    slot.close()
    assert slot.take() is frames[2]  # what waits is still written after close
    assert slot.take() is None


class Gated(FakeCapture):
    """A capture whose ``hold_at``-th grab waits until ``writing`` is set."""

    def __init__(self, frames: int, hold_at: int, writing: threading.Event) -> None:
        super().__init__(True, frames)
        self.grabs = 0
        self.hold_at = hold_at
        self.writing = writing

    def grab(self) -> bool:
        self.grabs += 1
        if self.grabs == self.hold_at:
            assert self.writing.wait(10)
        return super().grab()


def test_latest_never_waits_for_a_slow_writer_and_drops_the_frames_it_replaced(
    tmp_path,
) -> None:
    # 20 frames at 10/s sampled at 2/s: frames 0, 5, 10 and 15 are kept. Writing frame 0
    # takes until the stream has ended: 5 waits, 10 replaces it, 15 replaces 10; after
    # the stream ends the writer finishes 0 and writes 15, the newest.
    clock = FakeClock()
    writing, release = threading.Event(), threading.Event()
    script = Script(clock, [Gated(20, 2, writing)], 0.1)
    metrics = CameraMetrics()
    health = metrics.camera("door", clock.monotonic)
    camera = Camera("door", "http://h/live.ts", fps=2)

    def wait(seconds: float) -> bool:
        release.set()  # the stream failed: every frame was read
        return script.wait(seconds)

    reader = StreamReader(
        "door", camera.url, clock, health, lambda: False, wait,
        backoff=Backoff(1.0, 1.0, jitter=0.0), opener=script.open,
        diagnose=lambda url, elapsed, t: "-",
    )  # fmt: skip
    refs: list[Any] = []

    def emit(ref: Any) -> None:
        writing.set()
        assert release.wait(10)
        refs.append(ref)

    stats = run_camera(
        camera, reader, FrameWriter("door", str(tmp_path), emit), health, clock, "latest"
    )
    assert [r.meta["frame"] for r in refs] == [0, 15]
    assert (stats.read, stats.stored, stats.skipped, stats.dropped) == (20, 2, 16, 2)
    h = camera_health(metrics.exposition().decode())["door"]
    assert (h["stored"], h["skipped"], h["dropped"], h["failed"]) == (2, 16, 2, 0)


def test_backlog_follows_acks_and_the_groups_commits() -> None:
    backlog = Backlog(2.0)
    a = [backlog.sent("gate", 1, t) for t in (10.0, 10.5, 11.0)]
    b = backlog.sent("door", 1, 10.2)
    assert backlog.partitions() == [1] and backlog.pending("gate") == 3
    assert backlog.lag_s("gate", 12.0) == pytest.approx(2.0)
    # no worker of the group has committed anything on partition 1: nothing to follow
    assert backlog.too_far_behind("gate", 12.0) is None
    backlog.committed({0: 3, 1: 0}, 11.0)
    assert backlog.too_far_behind("gate", 11.5) is None
    assert backlog.too_far_behind("gate", 12.0) == pytest.approx(2.0)
    backlog.committed({1: 100}, 11.5)  # nothing acknowledged yet: nothing is known to be done
    assert backlog.pending("gate") == 3
    for item, offset in zip([*a, b], [7, 8, 10, 9], strict=True):
        backlog.acked(item, offset)
    backlog.committed({1: 9}, 12.0)  # offsets 7 and 8 are done; 9 (door) and 10 are not
    assert backlog.pending("gate") == 1 and backlog.pending("door") == 1
    # two of gate's refs done in the 2 s since its first was sent: 1 s a frame
    assert backlog.pace_s("gate") == pytest.approx(1.0) and backlog.pace_s("door") is None
    assert backlog.lag_s("gate", 12.0) == pytest.approx(1.0)  # waited 1 s, 1 frame to do
    for t in (12.5, 13.0):
        backlog.sent("gate", 1, t)
    assert backlog.lag_s("gate", 13.0) == pytest.approx(3.0)  # 3 frames at 1 s each
    backlog.committed({0: 50, 1: None}, 13.0)  # a partition the group never committed
    assert backlog.pending("gate") == 3
    backlog.failed(b)  # never delivered: no worker will finish it
    assert backlog.pending("door") == 0 and backlog.lag_s("door", 99.0) == 0.0
    backlog.forget("gate")
    assert backlog.partitions() == [] and backlog.too_far_behind("gate", 99.0) is None
    assert backlog.pace_s("gate") is None
    with pytest.raises(ValueError):
        Backlog(0)
    # a capture without workers: what it remembers is bounded, and still old enough
    bounded = Backlog(2.0, max_pending=5)
    for t in range(100):
        bounded.sent("gate", 0, float(t))
    assert bounded.pending("gate") == 5 and bounded.lag_s("gate", 100.0) == 5.0


def test_following_the_commits_survives_a_broker_that_does_not_answer(caplog) -> None:
    backlog = Backlog(2.0)
    backlog.acked(backlog.sent("gate", 3, 0.0), 41)
    answers: list[Any] = [OSError("no broker"), OSError("no broker"), {3: 42}]
    asked: list[list[int]] = []

    def committed(partitions: Any) -> Any:
        asked.append(list(partitions))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    rounds = iter([False, False, False, False, True])
    with caplog.at_level(logging.INFO, logger="imgstream.capture"):
        follow_commits(backlog, committed, lambda s: next(rounds), lambda: 1.0)
    assert asked == [[3], [3], [3]]  # then nothing is left to ask about
    assert backlog.pending("gate") == 0
    assert caplog.messages == [
        "cannot read the workers' committed offsets: no broker",
        "the workers' committed offsets can be read again",
    ]


def simulate(backlog: Backlog, seconds: int = 60) -> tuple[list[tuple[float, float]], int]:
    """A camera at 5 frames/s and a worker at 2.5/s, in ticks of 0.1 s: the worker takes
    4 ticks a frame and commits after every 2 (or when it runs out), its commits are
    read every 5 ticks. (finish time, latency) of each frame done, and frames dropped."""
    backlog.committed({0: 0}, 0.0)
    todo: deque[tuple[int, float]] = deque()
    latencies: list[tuple[float, float]] = []
    dropped = offset = done = commit = 0
    current: tuple[int, float] | None = None
    busy_until: int | None = None
    for k in range(seconds * 10):
        t = k / 10
        if k % 2 == 0:  # a frame
            if backlog.too_far_behind("cam", t) is None:
                backlog.acked(backlog.sent("cam", 0, t), offset)
                todo.append((offset, t))
                offset += 1
            else:
                dropped += 1
        if busy_until == k and current is not None:
            latencies.append((t, t - current[1]))
            done += 1
            current = busy_until = None
            if done % 2 == 0 or not todo:
                commit = done
        if busy_until is None and todo:
            current, busy_until = todo.popleft(), k + 4
        if k % 5 == 0:
            backlog.committed({0: commit}, t)
    return latencies, dropped


def test_a_worker_slower_than_its_camera_is_kept_busy_with_fresh_frames() -> None:
    latencies, dropped = simulate(Backlog(2.0))
    settled = [lat for t, lat in latencies if t > 10]
    # near --max-lag, not twice it (the camera sends twice what the worker does): the
    # refs still to do are counted at the worker's pace, not only the oldest one's wait
    assert max(settled) <= 2.0
    assert len(latencies) >= 0.98 * 60 / 0.4  # the worker is never idle
    assert dropped >= 0.45 * 300  # about half the frames: what the worker cannot do


def test_a_camera_drops_frames_while_the_workers_are_behind(tmp_path, caplog) -> None:
    # 10 frames/s sampled at 5/s; the workers finish nothing until t = 3 s, then
    # everything: with --max-lag 1, frames are sent until the first is 1 s old,
    # dropped until the commit, then sent again.
    clock = FakeClock()
    script = Script(clock, [FakeCapture(True, 50)], 0.1)
    metrics = CameraMetrics()
    health = metrics.camera("gate", clock.monotonic)
    camera = Camera("gate", "rtsp://viewer:pw@h/s", fps=5)
    backlog = Backlog(1.0, "workers")
    backlog.committed(
        {0: 0}, clock.monotonic()
    )  # the group reads partition 0 (and has finished nothing)
    started = clock.monotonic()
    refs: list[Any] = []

    def emit(ref: Any) -> None:
        backlog.acked(backlog.sent("gate", 0, clock.monotonic()), len(refs))
        refs.append(ref)

    def grab_and_commit() -> bool:
        if clock.monotonic() - started >= 3.0:
            backlog.committed({0: len(refs)}, clock.monotonic())
        return original()

    reader = StreamReader(
        "gate", camera.url, clock, health, lambda: False, script.wait,
        backoff=Backoff(1.0, 1.0, jitter=0.0), opener=script.open,
        diagnose=lambda url, elapsed, t: "-",
    )  # fmt: skip
    cap = script.captures[0]
    original = cap.grab
    cap.grab = grab_and_commit  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="imgstream.capture"):
        stats = run_camera(
            camera, reader, FrameWriter("gate", str(tmp_path), emit), health, clock, "all", backlog
        )
    sent_at = [(r.ts - refs[0].ts) / 1000 for r in refs]
    assert max(t for t in sent_at if t < 3) == pytest.approx(0.8)  # then dropped until 3 s
    assert min(t for t in sent_at if t > 1) >= 3.0
    assert stats.dropped == 10 and stats.stored == len(refs) == 25 - 10
    h = camera_health(metrics.exposition().decode())["gate"]
    assert (h["stored"], h["dropped"]) == (15, 10)
    warnings = [r.getMessage() for r in caplog.records if "dropping new frames" in r.getMessage()]
    assert warnings == [
        "camera gate: the workers of group 'workers' are 1.0s behind its frames (--max-lag 1s); "
        "dropping new frames until they catch up (1 dropped)"
    ]
    assert "pw" not in caplog.text


def test_a_removed_camera_leaves_metrics() -> None:
    metrics = CameraMetrics()
    for name in ("gate", "door"):
        metrics.camera(name, lambda: 0.0).frame("dropped")
    metrics.forget("door")
    metrics.forget("nope")
    assert set(camera_health(metrics.exposition().decode())) == {"gate"}
    assert camera_health(metrics.exposition().decode())["gate"]["dropped"] == 1


def test_status_shows_each_cameras_dropped_frames(capsys) -> None:
    from imgstream.cli.admin import _echo_cameras

    metrics = CameraMetrics()
    gate = metrics.camera("gate", lambda: 0.0)
    for outcome in ("stored", "stored", "dropped", "dropped", "dropped", "skipped"):
        gate.frame(outcome)
    _echo_cameras(camera_health(metrics.exposition().decode()), [])
    header, row = capsys.readouterr().out.splitlines()
    columns = dict(zip(header.split(), row.split(), strict=True))
    assert (columns["stored"], columns["skipped"], columns["dropped"]) == ("2", "1", "3")


# --- the cameras file, read again while capture runs ----------------------------------


def test_diff_cameras_by_name() -> None:
    gate, door = Camera("gate", "rtsp://u:a@h/1", 5), Camera("door", "http://h/2", 2)
    yard = Camera("yard", "http://h/3", 2)
    new_gate = Camera("gate", "rtsp://u:b@h/1", 10)
    changes = diff_cameras([gate, door], [new_gate, door, yard])
    assert changes.added == (yard,) and changes.removed == ()
    assert changes.changed == (new_gate,) and changes.unchanged == ("door",)
    assert changes.describe([gate, door]) == "added yard; restarted gate (url, fps); 1 unchanged"
    assert not diff_cameras([gate, door], [door, gate])
    gone = diff_cameras([gate, door], [door])
    assert gone.removed == (gate,) and gone.describe([gate, door]) == "removed gate; 1 unchanged"


def test_the_cameras_file_counts_as_changed_once_it_settles(tmp_path) -> None:
    path = tmp_path / "cams.toml"
    path.write_text('[[camera]]\nname = "gate"\nurl = "http://h/1"\n')
    stats: list[Any] = [(1, 10, 1)]
    file = CamerasFile(str(path), {}, stat=lambda p: stats[-1])
    assert [c.name for c in file.load()] == ["gate"]
    assert file.changed() is False
    stats.append((2, 5, 1))  # being written
    assert file.changed() is False
    stats.append((3, 40, 1))  # still being written
    assert file.changed() is False
    assert file.changed() is True  # the same on two polls: settled
    assert file.changed() is True  # until it is read
    file.load()
    assert file.changed() is False
    stats.append(None)  # removed (or being replaced)
    assert [file.changed(), file.changed()] == [False, True]


class StubPool:
    """What reload_cameras needs of a CameraPool."""

    def __init__(self, cameras: list[Camera]) -> None:
        self.running = cameras
        self.applied: list[list[Camera]] = []

    def cameras(self) -> list[Camera]:
        return self.running

    def apply(self, cameras: list[Camera]) -> Any:
        self.applied.append(cameras)
        changes = diff_cameras(self.running, cameras)
        self.running = cameras
        return changes


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[camera]]\nname = "gate"\nurl = "http://h/1"\nfps = 0\n', "fps must be positive"),
        ('[[camera]]\nname = "gate"\n', "url is required"),
        ('[[camera]]\nname="a"\nurl="http://x"\n[[camera]]\nname="a"\nurl="http://y"\n', "two"),
        ('[[camera]]\nname = "gate"\nurl = "rtsp://u:${NOPE}@h/1"\n', "NOPE is not set"),
        ("[[camera]\n", "not valid TOML"),
    ],
)
def test_a_bad_new_cameras_file_keeps_the_running_cameras(tmp_path, caplog, text, problem) -> None:
    path = tmp_path / "cams.toml"
    path.write_text('[[camera]]\nname = "gate"\nurl = "rtsp://u:${PW}@h/1"\n')
    file = CamerasFile(str(path), {"PW": "hunter2"})
    pool = StubPool(file.load())
    path.write_text(text)
    with caplog.at_level(logging.INFO, logger="imgstream.capture"):
        assert reload_cameras(pool, file) is None  # type: ignore[arg-type]
    assert pool.applied == [] and [c.name for c in pool.running] == ["gate"]
    (line,) = caplog.messages
    assert problem in line and line.startswith(f"--cameras {path}")
    assert line.endswith("still running the 1 cameras of the last good file")
    assert "hunter2" not in caplog.text


def test_a_good_new_cameras_file_is_applied_and_its_secrets_hidden_first(tmp_path, caplog) -> None:
    path = tmp_path / "cams.toml"
    path.write_text('[[camera]]\nname = "gate"\nurl = "http://h/1"\n')
    file = CamerasFile(str(path), {"PW": "hunter2"})
    pool = StubPool(file.load())
    path.write_text(
        '[[camera]]\nname = "gate"\nurl = "http://h/1"\n'
        '[[camera]]\nname = "door"\nurl = "rtsp://u:${PW}@h/2"\n'
    )
    hidden: list[str] = []
    with caplog.at_level(logging.INFO, logger="imgstream.capture"):
        changes = reload_cameras(pool, file, hidden.extend)  # type: ignore[arg-type]
    assert changes is not None and [c.name for c in changes.added] == ["door"]
    assert "hunter2" in hidden
    assert caplog.messages == [f"cameras file {path}: added door; 1 unchanged"]


def test_refs_not_delivered_are_counted_each_and_logged_once_a_minute(caplog) -> None:
    from imgstream.producers.produce import Undelivered

    now = [0.0]
    undelivered = Undelivered(lambda: now[0])
    with caplog.at_level(logging.ERROR):
        for t in (0.0, 1.0, 2.0, 30.0, 61.0, 62.0):
            now[0] = t
            undelivered.add(TimeoutError("broker away"))
    assert undelivered.count == 6
    assert [r.getMessage() for r in caplog.records] == [
        "1 ref(s) not delivered (1 in all): broker away",
        "4 ref(s) not delivered (5 in all): broker away",
    ]


def test_the_pool_tracks_exactly_the_cameras_that_keep_the_newest_frames(tmp_path) -> None:
    """A reload that switches a camera's ``frames`` switches its tracking too, even when
    no camera kept the newest frames at start."""
    from imgstream.clock import SystemClock
    from imgstream.producers.video.live import CameraPool, LiveOptions

    backlog = Backlog(1.0, "workers")
    options = LiveOptions(Timeouts(0.2, 0.2), backoff_initial_s=0.05, frames="all")
    pool = CameraPool(str(tmp_path), lambda ref: None, CameraMetrics(), SystemClock(), options)
    pool.backlog = backlog
    missing = str(tmp_path / "no-such-stream.ts")  # the reader retries it until stopped
    try:
        pool.apply([Camera("gate", missing), Camera("door", missing)])
        assert not backlog.tracks("gate") and not backlog.tracks("door")
        pool.apply([Camera("gate", missing, frames="latest"), Camera("door", missing)])
        assert backlog.tracks("gate") and not backlog.tracks("door")
        pool.apply([Camera("gate", missing), Camera("door", missing)])
        assert not backlog.tracks("gate")
        pool.apply([Camera("door", missing, frames="latest")])
        assert backlog.tracks("door") and not backlog.tracks("gate")
    finally:
        pool.stop_all()
