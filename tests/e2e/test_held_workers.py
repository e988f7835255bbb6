"""Workers `imgstream run` starts before its broker: held until released, gone if not.

The bootstrap address is a listening socket of the test's own, so what a
worker does to the broker is seen, not inferred from how long it lives: a
held worker must never connect, a released one must.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from imgstream.consumers.processes import HOLD_ENV


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket on a free loopback port that records connections (nothing answers)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock
    finally:
        sock.close()


def _connected(sock: socket.socket, timeout_s: float) -> bool:
    """True once somebody connects to ``sock`` within ``timeout_s``."""
    readable, _, _ = select.select([sock], [], [], timeout_s)
    return bool(readable)


def _held_worker(tmp_path, sock: socket.socket) -> subprocess.Popen[bytes]:
    """A held worker for the broker at ``sock``; its output goes to ``tmp_path / "worker.log"``."""
    port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "imgstream.cli", "work", "--bootstrap"]
    cmd += [f"127.0.0.1:{port}", "--out", str(tmp_path / "out"), "--connect-timeout", "30"]
    with open(tmp_path / "worker.log", "wb") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, HOLD_ENV: "1"},
        )


def test_a_held_worker_whose_run_gives_up_exits_0_without_touching_the_broker(
    tmp_path, listener
) -> None:
    worker = _held_worker(tmp_path, listener)
    try:
        # Long enough to load its modules and reach the broker, were it not held.
        assert not _connected(listener, 3.0), "a held worker connected to the broker"
        assert worker.poll() is None
        assert worker.stdin is not None
        worker.stdin.close()  # the run is gone: no go line
        code = worker.wait(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    out = (tmp_path / "worker.log").read_text()
    assert code == 0, out
    assert not _connected(listener, 0), "the worker connected on its way out"
    assert "Traceback" not in out


def test_a_released_worker_goes_to_the_broker(tmp_path, listener) -> None:
    worker = _held_worker(tmp_path, listener)
    try:
        assert worker.stdin is not None
        worker.stdin.write(b"go\n")
        worker.stdin.close()
        went = _connected(listener, 30)
    finally:
        worker.kill()
        worker.wait()
    out = (tmp_path / "worker.log").read_text()
    assert went, f"a released worker never connected to its broker: {out}"
