"""Worker processes started from one config: ``imgstream run``'s workers.

A run can start its workers *held* (:data:`HOLD_ENV` set): each loads its
modules and then waits for one line on stdin before it touches the broker.
The run starts them first, so their imports (half a second of OpenCV, NumPy
and the Kafka client) overlap its own start-up (broker, topics, refs), and
releases them once the topics exist. A held worker whose stdin closes
without a line (the run gave up) exits 0 without starting.
"""

from __future__ import annotations

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
from imgstream.stores import local_dir

#: Environment variable that tells ``imgstream work`` to wait for the go line on stdin.
HOLD_ENV = "IMGSTREAM_HOLD_UNTIL_STDIN"


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
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[str] = []
        env = {**os.environ, HOLD_ENV: "1"} if held else None
        for i in range(n):
            path = os.path.join(log_dir, f"worker-{i + 1}.log")
            with open(path, "wb") as log:
                proc = subprocess.Popen(
                    worker_command(config),
                    stdin=subprocess.PIPE if held else subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            self.procs.append(proc)
            self.logs.append(path)

    @property
    def worker_ids(self) -> set[str]:
        """The worker ids the processes will report (host-pid)."""
        host = socket.gethostname()
        return {f"{host}-{p.pid}" for p in self.procs}

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
