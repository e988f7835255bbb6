"""A deployment across simulated hosts: Apache Kafka, an S3 server and workers, each on its own.

Built on :mod:`tests.netsim`. The Kafka host runs ``compose/kafka/kraft.py``
as a script inside its namespace (one KRaft node whose listeners bind the
host's address, CLIENT on port 9092); the S3 host runs moto's server bound
to its address (port 5000); every worker host runs ``imgstream work``
processes with the bootstrap and endpoint of those hosts, under the host's
CPU cap. The test process, in the root namespace, reaches all of them over
the bridge: it makes topics, produces refs and reads records like any other
client. Shared by ``tests/integration/test_multihost.py``,
``tests/integration/test_partition.py`` (a worker host cut off by
:meth:`~tests.netsim.Host.cut`, a worker paused) and
``benchmarks/bench_multihost.py``; :func:`available` says whether it can run.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from tests.fixtures.cluster import kraft
from tests.fixtures.s3 import s3_env
from tests.netsim import Host, Network
from tests.netsim import available as netsim_available

ROOT = Path(__file__).resolve().parents[1]
KRAFT = ROOT / "compose" / "kafka" / "kraft.py"
KAFKA_PORT = 9092
S3_PORT = 5000
S3_NS = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
# moto checks no signature, but treats unsigned requests as anonymous ones, which
# may not see what a signed client wrote (as in tests/fixtures/s3.py).
S3_AUTH = (
    "AWS4-HMAC-SHA256 Credential=imgstream-test/20260101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=0"
)


def available(partitions: bool = False, s3: bool = True) -> tuple[bool, str]:
    """Whether a :class:`Deployment` can run here: (True, "") or (False, the reason).

    Root, iproute2 and cgroups (:func:`tests.netsim.available`; with
    ``partitions``, ``iptables`` too), Java and Maven for Kafka, and, with
    ``s3``, moto's server.
    """
    ok, reason = netsim_available(partitions)
    if not ok:
        return ok, reason
    ok, reason = kraft().available()
    if not ok:
        return bool(ok), str(reason)
    if s3 and importlib.util.find_spec("moto") is None:
        return False, "moto is not installed (pip install 'moto[server]')"
    return True, ""


class ServiceError(RuntimeError):
    """A service of the deployment did not come up; carries the end of its log."""


def _tail(log: Path, size: int = 3000) -> str:
    return log.read_bytes()[-size:].decode("utf-8", "replace") if log.exists() else ""


def _wait(
    what: str,
    ready: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float,
) -> None:
    """Until ``ready()`` is true; ServiceError if ``proc`` exits or the time passes."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited ({proc.returncode}):\n{_tail(log)}")
        if time.monotonic() >= deadline:
            raise ServiceError(f"{what} not ready in {timeout_s:.0f}s:\n{_tail(log)}")
        time.sleep(0.1)


def _accepts(address: str, port: int) -> bool:
    with contextlib.suppress(OSError):
        socket.create_connection((address, port), timeout=0.5).close()
        return True
    return False


class S3Client:
    """Buckets and objects over plain HTTP on ``address:port`` (one connection per call)."""

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One request; (status, body)."""
        conn = http.client.HTTPConnection(self.address, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Authorization": S3_AUTH})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket``."""
        status, body = self.call("PUT", f"/{bucket}")
        if status != 200:
            raise RuntimeError(f"create bucket {bucket}: {status} {body[:300]!r}")

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Store an object; its ``s3://`` URI."""
        status, body = self.call("PUT", f"/{bucket}/{key}", data)
        if status != 200:
            raise RuntimeError(f"put {bucket}/{key}: {status} {body[:300]!r}")
        return f"s3://{bucket}/{key}"

    def get(self, uri: str) -> bytes | None:
        """The bytes of ``s3://bucket/key``, or None when there is no such object."""
        status, body = self.call("GET", "/" + uri.removeprefix("s3://"))
        return body if status == 200 else None

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (ListObjectsV2, following continuation tokens)."""
        keys: list[str] = []
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            status, body = self.call("GET", f"/{bucket}?{urllib.parse.urlencode(query)}")
            if status != 200:
                raise RuntimeError(f"list {bucket}/{prefix}: {status} {body[:300]!r}")
            page = ET.fromstring(body)
            keys += [k.text or "" for k in page.findall(".//s3:Contents/s3:Key", S3_NS)]
            token = page.findtext("s3:NextContinuationToken", "", S3_NS)
            if not token:
                return sorted(keys)


class Deployment:
    """Kafka, S3 and ``workers`` worker hosts (each capped at ``worker_cores``) on one network."""

    def __init__(
        self, net: Network, workdir: Path, workers: int = 3, worker_cores: float | None = 0.5
    ) -> None:
        self.net = net
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.kafka_host = net.add_host("kafka")
        self.s3_host = net.add_host("s3")
        self.worker_hosts = [
            net.add_host(f"worker{i + 1}", cores=worker_cores) for i in range(workers)
        ]
        self.workers: dict[str, list[subprocess.Popen[bytes]]] = {
            h.name: [] for h in self.worker_hosts
        }
        self._worker_logs: dict[int, Path] = {}  # pid -> its log

    # -- services --------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The Kafka host's CLIENT listener."""
        return f"{self.kafka_host.address}:{KAFKA_PORT}"

    @property
    def endpoint(self) -> str:
        """The S3 server's URL."""
        return f"http://{self.s3_host.address}:{S3_PORT}"

    @property
    def s3_env(self) -> dict[str, str]:
        """The AWS variables a client needs for this store (endpoint and credentials)."""
        return s3_env(self.endpoint, home=self.workdir)

    def s3(self) -> S3Client:
        """Plain HTTP to the S3 host (what the server really holds, not imgstream's client)."""
        return S3Client(self.s3_host.address, S3_PORT)

    def log(self, name: str) -> Path:
        """A new log file for a process called ``name``."""
        n = sum(1 for _ in self.logs.glob(f"{name}-*.log"))
        path = self.logs / f"{name}-{n}.log"
        path.touch()
        return path

    def start_kafka(self, timeout_s: float = 120) -> str:
        """One KRaft node on the Kafka host; its bootstrap address once it serves clients."""
        log = self.log("kafka")
        argv = [sys.executable, str(KRAFT), "--host", self.kafka_host.address]
        argv += ["--port", str(KAFKA_PORT), "--heap-mb", "256"]
        argv += ["--workdir", str(self.workdir / "kafka")]
        proc = self.kafka_host.popen(argv, log)

        def ready() -> bool:
            return "ready in" in _tail(log, 100_000) and _accepts(
                self.kafka_host.address, KAFKA_PORT
            )

        _wait("Kafka (kraft.py)", ready, proc, log, timeout_s)
        return self.bootstrap

    def start_s3(self, timeout_s: float = 60) -> str:
        """moto's S3 server on the S3 host; its endpoint once it answers."""
        log = self.log("s3")
        argv = [sys.executable, "-m", "moto.server", "-H", self.s3_host.address]
        proc = self.s3_host.popen([*argv, "-p", str(S3_PORT)], log)

        def ready() -> bool:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2).close()
                return True
            return False

        _wait("the S3 server (moto)", ready, proc, log, timeout_s)
        return self.endpoint

    def start(self) -> Deployment:
        """Kafka and S3, in parallel (each host has its own CPU budget)."""
        s3_error: list[BaseException] = []

        def s3() -> None:
            try:
                self.start_s3()
            except BaseException as exc:  # re-raised on this thread below
                s3_error.append(exc)

        thread = threading.Thread(target=s3, name="start-s3")
        thread.start()
        try:
            self.start_kafka()
        finally:
            thread.join()
        if s3_error:
            raise s3_error[0]
        return self

    # -- workers ---------------------------------------------------------------------------------

    def start_worker(
        self,
        host: Host,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        label: str = "",
    ) -> subprocess.Popen[bytes]:
        """``imgstream ARGS`` on ``host`` (with this store's AWS variables).

        Its log is ``logs/HOST[-LABEL]-N.log`` (:meth:`log_of`).
        """
        argv = [sys.executable, "-m", "imgstream.cli", *args]
        log = self.log(f"{host.name}-{label}" if label else host.name)
        proc = host.popen(argv, log, env={**self.s3_env, **(env or {})})
        self.workers[host.name].append(proc)
        self._worker_logs[proc.pid] = log
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> Path:
        """The log of a worker started by :meth:`start_worker`."""
        return self._worker_logs[proc.pid]

    def worker_logs(self, pattern: str = "worker*.log") -> str:
        """The end of every log matching ``pattern``, each under a title (for a failure)."""
        parts = []
        for path in sorted(self.logs.glob(pattern)):
            parts.append(f"--- {path.name}\n{_tail(path, 4000)}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """Failures inside carry the end of every log of the deployment."""
        try:
            yield
        except (AssertionError, ServiceError) as exc:
            raise type(exc)(f"{exc}\n{self.worker_logs('*.log')}") from exc

    def stop_workers(self, timeout_s: float = 30) -> None:
        """SIGTERM every worker still running; SIGKILL the host's processes after ``timeout_s``."""
        procs = [p for ps in self.workers.values() for p in ps if p.poll() is None]
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for host in self.worker_hosts:
            host.kill()
