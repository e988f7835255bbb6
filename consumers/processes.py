"""Worker processes started from one config: ``imgstream run``'s workers.

A run can start its workers *held* (:data:`HOLD_ENV` set): each loads its
modules and then waits for one line on stdin before it touches the broker.
The run starts them first, so their imports (half a second of OpenCV, NumPy
and the Kafka client) overlap its own start-up (broker, topics, refs), and
releases them once the topics exist. A held worker whose stdin closes
without a line (the run gave up) exits 0 without starting.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace

from imgstream.broker import free_port
from imgstream.config import WorkerConfig, to_args
from imgstream.io.stores import local_dir

#: Environment variable that tells ``imgstream work`` to wait for the go line on stdin.
HOLD_ENV = "IMGSTREAM_HOLD_UNTIL_STDIN"
#: Restarts of crashed workers a run makes in all before it lets them stay down.
MAX_RESTARTS = 20

log = logging.getLogger(__name__)


def worker_command(config: WorkerConfig) -> list[str]:
    """The command line of one worker process for ``config`` (from the settings table)."""
    return [sys.executable, "-m", "imgstream.cli", "work", *to_args(config)]


def reads_directly(exclusive: bool, workers: int, exactly_once: bool) -> bool:
    """Whether a run's worker reads every refs partition itself instead of joining.

    A group of one that is the run's alone has nobody to hand partitions to,
    and the join costs seconds (the embedded broker waits half a session
    timeout for other members). Commits still go to the group; with
    ``--exactly-once`` (which needs the group's generation) or several
    workers, the group assigns.
    """
    return exclusive and workers == 1 and not exactly_once


def wait_for_release() -> bool:
    """In a held worker: block until the run says go; False if it never will."""
    return bool(sys.stdin.readline().strip())


class WorkerProcesses:
    """N worker processes started from one config."""

    def __init__(self, config: WorkerConfig, n: int, log_dir: str, held: bool = False) -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.config = config
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = [os.path.join(log_dir, f"worker-{i + 1}.log") for i in range(n)]
        #: Workers started again after they died by a signal (see :meth:`restart_crashed`).
        self.restarts = 0
        self._ids: set[str] = set()
        for i in range(n):
            self.procs.append(self._start(i, held))

    def _start(self, i: int, held: bool, again: bool = False) -> subprocess.Popen[bytes]:
        env = {**os.environ, HOLD_ENV: "1"} if held else None
        with open(self.logs[i], "ab" if again else "wb") as out:  # a restart's lines follow
            proc = subprocess.Popen(
                worker_command(self.config),
                stdin=subprocess.PIPE if held else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self._ids.add(f"{socket.gethostname()}-{proc.pid}")
        return proc

    @property
    def worker_ids(self) -> set[str]:
        """The worker ids the processes report (host-pid); grows as workers restart."""
        return self._ids

    def restart_crashed(self, limit: int = MAX_RESTARTS) -> int:
        """Start again each worker that died by a signal (a crash, an abort, an OOM kill).

        Its uncommitted images go to the attempts topic's count (crash
        isolation), so a worker restarted this way does not die on the same
        image more than ``--max-attempts`` times. A worker that exited with a
        code (an error it reported) stays down. At most ``limit`` restarts in
        all; returns how many were made now.
        """
        made = 0
        for i, proc in enumerate(self.procs):
            code = proc.poll()
            if code is None or code >= 0 or self.restarts >= limit:
                continue
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(code)
            log.warning("worker %d (pid %d) died by %s: starting it again", i + 1, proc.pid, name)
            self.restarts += 1
            made += 1
            self.procs[i] = self._start(i, held=False, again=True)
        return made

    def release(self) -> None:
        """Let held workers start (a no-op for workers that were not held)."""
        for p in self.procs:
            self._close_stdin(p, b"go\n")

    def alive(self) -> int:
        """How many are still running."""
        return sum(p.poll() is None for p in self.procs)

    def stop(self, timeout_s: float = 30.0) -> list[int]:
        """SIGTERM every worker, wait, SIGKILL stragglers; the exit codes.

        A worker still held is told there is nothing to do (stdin closes).
        """
        for p in self.procs:
            self._close_stdin(p, b"")
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        return codes

    @staticmethod
    def _close_stdin(proc: subprocess.Popen[bytes], line: bytes) -> None:
        if proc.stdin is None or proc.stdin.closed:
            return
        try:
            if line:
                proc.stdin.write(line)
            proc.stdin.close()
        except (BrokenPipeError, OSError):  # the worker is already gone
            pass


@dataclass(frozen=True)
class EarlyWorkers:
    """Workers started before the embedded broker, and the port it must listen on."""

    procs: WorkerProcesses
    port: int


def start_early(
    config: WorkerConfig, workers: int, partitions: int, direct: bool
) -> tuple[WorkerConfig, EarlyWorkers]:
    """Start held workers for a run on a fresh embedded broker (see :mod:`.processes`).

    The broker's port is chosen now and the refs topic will be created with
    ``partitions``, so a ``direct`` worker can be given its partitions.
    """
    port = free_port()
    config = replace(config, bootstrap=f"127.0.0.1:{port}")
    if direct:
        config = replace(config, partitions=tuple(range(partitions)))
    procs = WorkerProcesses(config, workers, os.path.join(local_dir(config.out_dir), "logs"), True)
    return config, EarlyWorkers(procs, port)


def new_group_name() -> str:
    """A consumer group name unique to one run."""
    return f"imgstream-run-{uuid.uuid4().hex[:8]}"
