"""One KRaft node's process: its ports and directory, launching its JVM, readiness, stopping.

Standard library only (used by ``kraft.py``). A node is ready when its log
shows "Kafka Server started" after the point it was (re)launched and its
CLIENT port accepts a TCP connection.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

READY_LINE = "Kafka Server started"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Node:
    """One combined broker+controller: its ports, directory, log and JVM.

    Owned by the thread that drives the cluster; nothing here is thread-safe.
    """

    def __init__(self, node_id: int, root: Path, host: str, client_port: int | None) -> None:
        self.id = node_id
        self.host = host
        self.dir = root / f"node-{node_id}"
        self.client_port = client_port if client_port is not None else free_port(host)
        self.internal_port = free_port(host)
        self.controller_port = free_port(host)
        self.config = self.dir / "server.properties"
        self.log = self.dir / "kafka.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: Where this JVM writes a class-data sharing archive when it exits (first run only).
        self.dump: Path | None = None
        self._mark = 0  # log offset at the last launch: readiness is looked for after it

    def running(self) -> bool:
        """Whether the JVM runs."""
        return self.proc is not None and self.proc.poll() is None

    def launch(self, cmd: list[str]) -> None:
        """Start the JVM with ``cmd``, its output appended to the log."""
        self._mark = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the JVMs
            )

    def wait_ready(self, deadline: float) -> None:
        """Until the node is ready (see the module docstring); RuntimeError if it exits or
        ``deadline`` (monotonic) passes."""
        while True:
            if not self.running():
                code = self.proc.returncode if self.proc else None
                raise RuntimeError(f"Kafka node {self.id} exited ({code}):\n{self.tail()}")
            with open(self.log, "rb") as fh:
                fh.seek(self._mark)
                logged = READY_LINE.encode() in fh.read()
            if logged:
                with contextlib.suppress(OSError):
                    socket.create_connection((self.host, self.client_port), timeout=0.5).close()
                    return
            if time.monotonic() >= deadline:
                raise RuntimeError(f"Kafka node {self.id} not ready in time:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, size: int = 3000) -> str:
        """The end of the log."""
        if not self.log.exists():
            return ""
        return self.log.read_bytes()[-size:].decode("utf-8", "replace").strip()

    def signal(self, kill: bool) -> bool:
        """SIGKILL (``kill``) or SIGTERM the JVM if it runs; whether it did."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        return True

    def reap(self, timeout_s: float) -> None:
        """Wait for the signalled JVM to exit; SIGKILL it after ``timeout_s``."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
