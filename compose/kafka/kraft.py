"""Apache Kafka (KRaft) on loopback from its Maven Central jars: one node or a cluster of three.

Standard library only, so it can be imported by path (the tests put this
folder on ``sys.path``) and run as a script::

    python compose/kafka/kraft.py [--nodes 3] [--host ADDR]   # prints the bootstrap address first

:class:`KafkaCluster` writes each node's ``server.properties`` from
``server.properties.template`` (plus the caller's properties), formats its
storage with ``kafka.tools.StorageTool``, starts ``kafka.Kafka`` with a small
JVM (``kraft_jvm.py``: jars resolved by Maven once, cached), and counts a node
ready when it has logged "Kafka Server started" and its client port accepts
a connection.

Every node is a combined broker+controller with three listeners: CLIENT
(``client_protocol``), INTERNAL (PLAINTEXT, between brokers and for setup
steps) and CONTROLLER (the static quorum of every node).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from types import TracebackType

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "server.properties.template"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


if str(HERE) not in sys.path:  # imported by path: the sibling modules live next to this one
    sys.path.insert(0, str(HERE))

import kraft_jvm as jvm  # noqa: E402
from kraft_jvm import available, ensure_jars, kafka_version  # noqa: E402
from kraft_node import Node  # noqa: E402

__all__ = ["KafkaCluster", "available", "ensure_jars", "kafka_version", "main"]


def new_cluster_id() -> str:
    """A random KRaft cluster id (a UUID in URL-safe base64, as Kafka writes them)."""
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaCluster:
    """``nodes`` combined KRaft nodes on loopback (see the module docstring)."""

    def __init__(
        self,
        nodes: int = 1,
        workdir: str | Path | None = None,
        heap_mb: int = 384,
        client_protocol: str = "PLAINTEXT",
        properties: Mapping[str, object] | None = None,
        format_args: Sequence[str] = (),
        host: str = "127.0.0.1",
        client_ports: Sequence[int] | None = None,
    ) -> None:
        """``properties`` are merged over the template's (a None value removes a line) and
        ``{node_id}`` in a value becomes the node's id; ``client_ports`` fixes CLIENT ports."""
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        if client_protocol not in PROTOCOLS:
            raise ValueError(f"client_protocol must be one of {', '.join(PROTOCOLS)}")
        if not 64 <= heap_mb <= 1024:
            raise ValueError("heap_mb must be within 64..1024")
        if client_ports is not None and len(client_ports) != nodes:
            raise ValueError("client_ports needs one port per node")
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="imgstream-kafka-"))
        self.heap_mb = heap_mb
        self.client_protocol = client_protocol
        self.properties = dict(properties or {})
        self.format_args = tuple(format_args)
        self.host = host
        self.nodes = {
            i: Node(i, self.workdir, host, client_ports[i - 1] if client_ports else None)
            for i in range(1, nodes + 1)
        }
        self.cluster_id = new_cluster_id()
        self._libs: Path | None = None
        self._formatted = False

    # -- addresses -----------------------------------------------------------------------------

    @property
    def node_ids(self) -> list[int]:
        """The node ids, 1..n."""
        return sorted(self.nodes)

    @property
    def bootstrap(self) -> str:
        """The CLIENT listener of every node, comma-separated."""
        return ",".join(f"{self.host}:{n.client_port}" for n in self.nodes.values())

    @property
    def internal_bootstrap(self) -> str:
        """The INTERNAL (PLAINTEXT) listener of every node, for admin and setup steps."""
        return ",".join(f"{self.host}:{n.internal_port}" for n in self.nodes.values())

    def client_port(self, node_id: int) -> int:
        """The CLIENT port of one node."""
        return self.nodes[node_id].client_port

    def internal_port(self, node_id: int) -> int:
        """The INTERNAL port of one node."""
        return self.nodes[node_id].internal_port

    def log_path(self, node_id: int) -> Path:
        """The node's log (its JVM's stdout and stderr, appended across restarts)."""
        return self.nodes[node_id].log

    def running(self, node_id: int) -> bool:
        """Whether the node's JVM runs."""
        return self.nodes[node_id].running()

    # -- configuration -------------------------------------------------------------------------

    def server_properties(self, node_id: int) -> dict[str, str]:
        """The node's ``server.properties``: the template's lines with ``properties`` over them."""
        node, n = self.nodes[node_id], len(self.nodes)
        fill = Template(TEMPLATE.read_text()).substitute(
            node_id=node.id,
            host=self.host,
            client_port=node.client_port,
            internal_port=node.internal_port,
            controller_port=node.controller_port,
            voters=",".join(f"{m.id}@{self.host}:{m.controller_port}" for m in self.nodes.values()),
            client_protocol=self.client_protocol,
            data_dir=node.dir / "data",
            rf=min(3, n),
            min_isr=2 if n >= 3 else 1,
        )
        props: dict[str, object] = {}
        for line in fill.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                props[key.strip()] = value.strip()
        props.update(self.properties)
        return {
            k: str(v).replace("{node_id}", str(node.id)) for k, v in props.items() if v is not None
        }

    def _write_configs(self) -> None:
        for node in self.nodes.values():
            node.dir.mkdir(parents=True, exist_ok=True)
            lines = [f"{k}={v}" for k, v in self.server_properties(node.id).items()]
            node.config.write_text("\n".join(lines) + "\n")

    def _format(self) -> None:
        """Format every node's storage (in parallel: one short JVM each)."""
        assert self._libs is not None
        args = ["format", "--cluster-id", self.cluster_id, "--ignore-formatted"]
        procs = {
            node.id: subprocess.Popen(
                jvm.java_command(
                    self._libs,
                    128,
                    "kafka.tools.StorageTool",
                    [*args, "--config", str(node.config), *self.format_args],
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            for node in self.nodes.values()
        }
        failed = []
        for node_id, proc in procs.items():
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                failed.append(f"node {node_id}: {out.decode(errors='replace').strip()[-1500:]}")
        if failed:
            raise RuntimeError("kafka.tools.StorageTool format failed: " + "\n".join(failed))
        self._formatted = True

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout_s: float = 90) -> KafkaCluster:
        """Format storage (once), start every node and wait until all are ready."""
        try:
            self._libs = ensure_jars()
            if not self._formatted:
                self._write_configs()
                self._format()
            deadline = time.monotonic() + timeout_s
            starting = [n for n in self.nodes.values() if not n.running()]
            for node in starting:
                self._launch(node.id)
            for node in starting:
                node.wait_ready(deadline)
        except BaseException:
            self.close()
            raise
        return self

    def _launch(self, node_id: int) -> None:
        """Start one node's JVM (the first JVM without an archive writes one at exit)."""
        assert self._libs is not None
        node = self.nodes[node_id]
        if not jvm.cds_archive(self._libs).exists() and not any(
            m.dump for m in self.nodes.values()
        ):
            node.dump = node.dir / "classes.jsa"
        node.launch(
            jvm.java_command(
                self._libs, self.heap_mb, "kafka.Kafka", [str(node.config)], dump_to=node.dump
            )
        )

    def tail(self, node_id: int, size: int = 3000) -> str:
        """The end of the node's log."""
        return self.nodes[node_id].tail(size)

    def _reap(self, node: Node, timeout_s: float) -> None:
        """Wait for a signalled JVM; keep a class-data archive it wrote at exit."""
        node.reap(timeout_s)
        if node.dump is not None and self._libs is not None:
            jvm.keep_archive(self._libs, node.dump)
        node.dump = None

    def kill(self, node_id: int) -> None:
        """SIGKILL the node's JVM (no controlled shutdown) and reap it."""
        node = self.nodes[node_id]
        if node.signal(kill=True):
            self._reap(node, 30)

    def stop_node(self, node_id: int, timeout_s: float = 60) -> None:
        """Stop one node gracefully (SIGTERM: controlled shutdown); SIGKILL after ``timeout_s``."""
        node = self.nodes[node_id]
        if node.signal(kill=False):
            self._reap(node, timeout_s)

    def start_node(self, node_id: int, wait: bool = True, timeout_s: float = 90) -> None:
        """(Re)start a stopped or killed node; with ``wait``, until it is ready again."""
        if self._libs is None or not self._formatted:
            raise RuntimeError("start() the cluster first")
        if self.running(node_id):
            return
        self._launch(node_id)
        if wait:
            self.nodes[node_id].wait_ready(time.monotonic() + timeout_s)

    def wait_ready(self, node_id: int, timeout_s: float = 90) -> None:
        """Wait until a node launched by ``start_node(..., wait=False)`` is ready."""
        self.nodes[node_id].wait_ready(time.monotonic() + timeout_s)

    def close(self, timeout_s: float = 30) -> None:
        """Stop every node (SIGTERM together, SIGKILL after ``timeout_s``); remove a temp dir."""
        live = [n for n in self.nodes.values() if n.signal(kill=False)]
        deadline = time.monotonic() + timeout_s
        for node in live:
            self._reap(node, max(0.1, deadline - time.monotonic()))
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        if not any(n.running() for n in self.nodes.values()):
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a cluster in the foreground; its bootstrap address is the first line of stdout."""
    parser = argparse.ArgumentParser(description="Apache Kafka (KRaft) on loopback.")
    parser.add_argument("--nodes", type=int, default=1, help="1, or 3 for a quorum of three")
    parser.add_argument("--heap-mb", type=int, default=384, help="JVM heap per node (MB)")
    parser.add_argument("--port", type=int, default=None, help="CLIENT port (one node only)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address every listener binds and advertises (e.g. a network namespace's)",
    )
    parser.add_argument("--workdir", default=None, help="data directory (default: temporary)")
    args = parser.parse_args(argv)
    if args.port is not None and args.nodes != 1:
        parser.error("--port needs --nodes 1")
    ok, reason = available()
    if not ok:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = KafkaCluster(
        nodes=args.nodes,
        heap_mb=args.heap_mb,
        workdir=args.workdir,
        host=args.host,
        client_ports=[args.port] if args.port is not None else None,
    )
    began = time.monotonic()
    try:
        cluster.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(cluster.bootstrap, flush=True)
    print(
        f"Apache Kafka {kafka_version()} (KRaft, {args.nodes} node(s)) on {cluster.bootstrap}, "
        f"ready in {time.monotonic() - began:.1f}s; logs in {cluster.workdir}; Ctrl-C to stop",
        file=sys.stderr,
    )
    code = 0
    try:
        while not stop.wait(0.5):
            dead = [i for i in cluster.node_ids if not cluster.running(i)]
            if dead:
                tails = "\n".join(cluster.tail(i) for i in dead)
                print(f"error: Kafka node(s) {dead} exited:\n{tails}", file=sys.stderr)
                code = 1
                break
    finally:
        print("stopping Apache Kafka (controlled shutdown)", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            cluster.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
