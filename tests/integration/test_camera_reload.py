"""`imgstream capture --cameras` reads its cameras file again while it runs.

Three live HTTP MPEG-TS streams (Debian's ffmpeg, which serves one client
and then exits: a camera that reconnected would find nothing there). The
file changes under the running capture: a camera is removed and two are
added (the watcher sees it), then a bad file comes (kept out, in one log
line), then an edit the watcher cannot see (same size and modification
time) is applied on SIGHUP. The camera that stayed in every file keeps its
connection, its thread and its frame counter: its frame indices go on rising
with no reset and no pause, and it never reconnects.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import time
from pathlib import Path

from imgstream.metrics import camera_health
from tests.fixtures.deploy import scrape
from tests.fixtures.streams import free_port
from tests.helpers import wait_until
from tests.integration.test_live_capture import metrics_url, stored, ts_of

PASSWORD = "Yard/Pass#42?"


def camera(name: str, url: str, fps: int = 2) -> str:
    return f'[[camera]]\nname = "{name}"\nurl = "{url}"\nfps = {fps}\n\n'


def replace(path: Path, text: str) -> None:
    """Write the file as configuration tools do: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def index_of(frame: Path) -> int:
    """The read index in a stored frame's name (``{ts}-{index}.jpg``)."""
    return int(frame.stem.split("-")[1])


def test_cameras_added_removed_changed_and_a_bad_file_while_capture_runs(
    topics, background, stream_server, clip, tmp_path
) -> None:
    door, gate, yard = stream_server(clip), stream_server(clip), stream_server(clip)
    yard_url = yard.url.replace("http://", "http://viewer:${YARD_PASSWORD}@")
    dead = f"http://127.0.0.1:{free_port()}/live.ts"
    cameras = tmp_path / "cameras.toml"
    cameras.write_text(camera("door", door.url) + camera("gate", gate.url))
    store = tmp_path / "frames"
    capture = background(
        *("-v", "capture", "--cameras", str(cameras), "--store", str(store)),
        *("--bootstrap", topics.bootstrap, "--topic", topics.refs, "--max-width", "160"),
        *("--open-timeout", "2", "--read-timeout", "2", "--metrics-port", "0"),
        name="capture",
        env={"YARD_PASSWORD": PASSWORD},
    )
    url = metrics_url(capture)
    wait_until(
        lambda: all(len(stored(store, c)) >= 3 for c in ("door", "gate")),
        60,
        what="frames of door and gate",
    )

    # 1. gate leaves, yard and spare (a dead URL) come: the watcher applies it
    started = time.monotonic()
    replace(cameras, camera("door", door.url) + camera("yard", yard_url) + camera("spare", dead))
    line = f"cameras file {cameras}: added yard, spare; removed gate; 1 unchanged"
    capture.wait_for_output(line, 30)
    applied_s = time.monotonic() - started
    removed_ms = time.time() * 1000
    wait_until(lambda: len(stored(store, "yard")) >= 3, 60, what="frames of yard")
    health = camera_health(scrape(url))
    assert set(health) == {"door", "yard", "spare"}, "gate's series are still on /metrics"

    # 2. a bad file: the running cameras go on, the problem in one line
    bad = camera("door", door.url) + camera("yard", yard_url) + camera("spare", dead, fps=0)
    replace(cameras, bad)
    capture.wait_for_output("fps must be positive", 30)
    frames_then = len(stored(store, "yard"))
    time.sleep(2.5)  # the watcher looks every second: it must not say it again
    errors = [ln for ln in capture.output().splitlines() if "fps must be positive" in ln]
    assert len(errors) == 1, errors
    assert f"--cameras {cameras} camera #3: fps must be positive, got 0" in errors[0]
    assert errors[0].endswith("still running the 3 cameras of the last good file")
    assert len(stored(store, "yard")) > frames_then, "yard stopped with the bad file"

    # 3. an edit the watcher cannot see (same size, same modification time) on SIGHUP
    seen = os.stat(cameras)
    with open(cameras, "r+") as fh:  # in place: same inode
        fh.write(bad.replace("fps = 0", "fps = 4"))
    os.utime(cameras, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    capture.send_signal(signal.SIGHUP)
    capture.wait_for_output(f"cameras file {cameras}: restarted spare (fps); 2 unchanged", 30)

    before_stop = len(stored(store, "door"))
    assert capture.stop() == 0, capture.output()
    log = capture.output()
    print(f"\nthe watcher applied the new file {applied_s:.2f}s after it was written")

    # door never reconnected: one connection, its read index never reset, no pause
    assert log.count("camera door: connected") == 1, log
    assert health["door"]["reconnects"] == 0 and health["door"]["connected"] == 1
    doors = stored(store, "door")
    assert len(doors) >= before_stop and ts_of(doors[-1]) > removed_ms + 3000
    indices = [index_of(f) for f in doors]
    assert indices == sorted(set(indices)), "door's frame counter went back"
    pauses = [(ts_of(b) - ts_of(a)) / 1000 for a, b in itertools.pairwise(doors)]
    # (reopening would take --read-timeout and a back-off, and find no server)
    assert max(pauses) < 2.0, f"door paused {max(pauses):.2f}s at 2 frames/s"
    # gate stopped when it was removed (a frame being stored then may still land)
    assert all(ts_of(f) < removed_ms for f in stored(store, "gate")[:-1])
    assert "camera gate: connected" in log and "camera yard: connected" in log
    assert re.search(r"camera spare: cannot open .*connection refused", log)
    refs = topics.read_refs()
    files = [f"{c}-{f.stem}" for c in ("door", "gate", "yard") for f in stored(store, c)]
    assert sorted(r.id for r in refs) == sorted(files), "a ref without a frame, or the reverse"
    assert "yard:" in log and PASSWORD not in log, "yard's password is in the log"
