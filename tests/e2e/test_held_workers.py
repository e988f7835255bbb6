"""Workers `imgstream run` starts before its broker: held until released, gone if not."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from imgstream.broker import free_port
from imgstream.consumers.processes import HOLD_ENV


def _held_worker(tmp_path) -> subprocess.Popen[bytes]:
    """A held worker; its output goes to ``tmp_path / "worker.log"``."""
    # Nothing listens on the port: a worker that touched the broker would wait
    # out --connect-timeout and fail (exit 3), not exit 0 at once.
    cmd = [sys.executable, "-m", "imgstream.cli", "work", "--bootstrap"]
    cmd += [f"127.0.0.1:{free_port()}", "--out", str(tmp_path / "out"), "--connect-timeout", "30"]
    with open(tmp_path / "worker.log", "wb") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, HOLD_ENV: "1"},
        )


def test_a_held_worker_whose_run_gives_up_exits_0_without_touching_the_broker(tmp_path) -> None:
    worker = _held_worker(tmp_path)
    time.sleep(1.0)  # loading its modules, then waiting on stdin
    assert worker.poll() is None
    started = time.monotonic()
    assert worker.stdin is not None
    worker.stdin.close()  # the run is gone: no go line
    code = worker.wait(timeout=20)
    out = (tmp_path / "worker.log").read_text()
    assert code == 0, out
    assert time.monotonic() - started < 5
    assert "Traceback" not in out


def test_a_released_worker_goes_to_the_broker(tmp_path) -> None:
    worker = _held_worker(tmp_path)
    assert worker.stdin is not None
    worker.stdin.write(b"go\n")
    worker.stdin.close()
    try:
        worker.wait(timeout=5)
    except subprocess.TimeoutExpired:  # trying to reach the absent broker: released
        worker.kill()
        worker.wait()
        return
    out = (tmp_path / "worker.log").read_text()
    raise AssertionError(f"a released worker exited at once: {out}")
