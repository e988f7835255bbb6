"""Workers on several hosts share one Kafka and one object store; a host dies mid-run.

Five simulated hosts (``tests/netsim.py``: network namespaces on a bridge,
CPU cgroups): Apache Kafka on one, moto's S3 server on another, three
worker hosts capped at half a core each. Refs point into the store
(``s3://``); workers read them with ``--root s3://BUCKET/in`` and write
outputs back with ``--out s3://BUCKET/out``. One worker host's processes are
SIGKILLed while it holds work: every ref still ends with a result or a
failure record, and every result's output is in the store with the right
pixels.

Needs root (namespaces, cgroups), iproute2, Java and Maven (Kafka) and moto;
skipped with the reason otherwise, a failure under CI=true or
IMGSTREAM_REQUIRE_MULTIHOST=1.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from imgstream.schema.records import Result
from tests.fixtures.kafka import Topics
from tests.helpers import wait_until
from tests.netsim import Network
from tests.netsim import available as netsim_available
from tests.simdeploy import KRAFT, Deployment

N_IMAGES = 60
PARTITIONS = 6
OPS = "bilateral:d=15|gray"  # about 0.1 s per image on half a core
METRICS_PORT = 9100  # every port is free on a host of its own


def _kraft_available() -> tuple[bool, str]:
    spec = importlib.util.spec_from_file_location("imgstream_multihost_kraft", KRAFT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ok, reason = module.available()
    return bool(ok), str(reason)


def _require() -> None:
    """Skip (or fail, where the simulation is required) when it cannot run here."""
    checks = [netsim_available, _kraft_available]
    for check in checks:
        ok, reason = check()
        if not ok:
            break
    else:
        if importlib.util.find_spec("moto") is not None:
            return
        reason = "moto is not installed (pip install 'moto[server]')"
    required = os.environ.get("CI") == "true" or os.environ.get("IMGSTREAM_REQUIRE_MULTIHOST")
    if required:
        pytest.fail(f"the multi-host simulation is required here, but: {reason}")
    pytest.skip(f"the multi-host simulation cannot run here: {reason}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Kafka, S3 and three half-core worker hosts for the module; all removed afterwards."""
    _require()
    began = time.monotonic()
    with Network() as net:
        deploy = Deployment(net, tmp_path_factory.mktemp("multihost"), workers=3, worker_cores=0.5)
        deploy.start()
        print(f"hosts, Kafka and S3 ready in {time.monotonic() - began:.1f}s")
        yield deploy


def _images(n: int) -> dict[str, np.ndarray]:
    """n distinct 320x240 colour images: smooth shapes plus noise, so the filter has work."""
    rng = np.random.default_rng(7)
    base = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (320, 240))
    out = {}
    for i in range(n):
        noise = rng.integers(-24, 25, base.shape, dtype=np.int16)
        out[f"img{i:03d}"] = np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return out


def _expected(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.bilateralFilter(img, 15, 75.0, 75.0), cv2.COLOR_BGR2GRAY)


def _in_flight(url: str) -> float:
    """The worker's ``imgstream_in_flight_images`` (consumed, not yet committed); 0 if down."""
    try:
        with urllib.request.urlopen(url, timeout=2) as page:
            text = page.read().decode()
    except OSError:
        return 0.0
    match = re.search(r"^imgstream_in_flight_images(?:\{[^}]*\})? (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _produce(deployment: Deployment, topics: Topics, prefix: str) -> None:
    """``imgstream produce s3://...`` as an operator runs it (outside the hosts)."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "imgstream.cli", "produce", prefix),
            *("--bootstrap", deployment.bootstrap, "--topic", topics.refs),
            *("--partitions", str(PARTITIONS), "--source", "multihost"),
        ],
        env={**os.environ, **deployment.s3_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def topics(deployment: Deployment) -> Iterator[Topics]:
    """Fresh topics and group on the Kafka host; their readers closed afterwards (no client
    may outlive the network: it would keep dialling an address that is gone)."""
    t = Topics(deployment.bootstrap, partitions=PARTITIONS)
    yield t
    t.close()


def test_workers_on_three_hosts_survive_one_host_dying(
    deployment: Deployment, topics: Topics
) -> None:
    """Three half-core worker hosts share refs in the store; one dies holding uncommitted work."""
    with deployment.explained():
        s3 = deployment.s3()
        bucket = f"multihost-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(bucket)
        images = _images(N_IMAGES)
        by_uri = {}
        for name, img in images.items():
            ok, png = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 0])
            assert ok
            by_uri[s3.put(bucket, f"in/{name}.png", png.tobytes())] = name
        _produce(deployment, topics, f"s3://{bucket}/in")
        args = [
            *("work", "--bootstrap", deployment.bootstrap, "--group", topics.group),
            *("--topic", topics.refs, "--results-topic", topics.results, "--dlq-topic", topics.dlq),
            *("--root", f"s3://{bucket}/in", "--out", f"s3://{bucket}/out"),
            *("--ops", OPS, "--threads", "2", "--max-batch", "4", "--max-wait", "0.2"),
            *("--connect-timeout", "30"),
        ]
        started = time.monotonic()
        procs = {}
        for host in deployment.worker_hosts:  # all at once: they join the group together
            extra = ["--metrics-port", str(METRICS_PORT), "--metrics-host", host.address]
            procs[host.name] = deployment.start_worker(host, [*args, *extra])
        stream = topics.stream()
        ids = {f"{name}-{proc.pid}": name for name, proc in procs.items()}
        held: dict[str, float] = {}

        def a_host_holds_work() -> str | None:
            """The first host with records out and uncommitted images in hand, if any."""
            stream.poll(0.05)
            for worker in {r.worker for r in stream.records} & set(ids):
                host = deployment.net.hosts[ids[worker]]
                held[host.name] = _in_flight(f"http://{host.address}:{METRICS_PORT}/metrics")
                if held[host.name] > 0:
                    return host.name
            return None

        victim_name = wait_until(a_host_holds_work, 60, interval=0, what="a worker host busy")
        victim = deployment.net.hosts[victim_name]
        victim_id = f"{victim_name}-{procs[victim_name].pid}"
        done_at_kill = len(stream.ids)
        killed = victim.kill()
        print(
            f"{victim_name}: {killed} process(es) killed {time.monotonic() - started:.1f}s in, "
            f"holding {held[victim_name]:.0f} uncommitted images; "
            f"{done_at_kill}/{N_IMAGES} refs done"
        )
        refs = topics.read_refs()
        assert sorted(r.uri for r in refs) == sorted(by_uri)
        stream.wait_for({r.id for r in refs}, timeout_s=90)
        print(f"every ref accounted for {time.monotonic() - started:.1f}s in")
        deployment.stop_workers()
        stream.drain()

        failures = [r for r in stream.records if not isinstance(r, Result)]
        assert not failures, failures[:3]
        results = {r.uri: r for r in stream.records if isinstance(r, Result)}
        assert set(results) == set(by_uri)
        # The dead host's refs were finished on the others; all three normally take
        # part, but a member that hangs in a rebalance only delays its partitions.
        survivors = {r.worker for r in stream.records} - {victim_id}
        assert survivors & set(ids), survivors
        idle = sorted(ids[w] for w in set(ids) - survivors - {victim_id})
        if idle:
            print(f"hosts that processed nothing: {idle}")
        outputs = {f"s3://{bucket}/{key}" for key in s3.keys(bucket, "out/")}
        assert outputs == {r.output_uri for r in results.values()}
        for uri, rec in results.items():
            assert rec.output_uri is not None
            data = s3.get(rec.output_uri)
            assert data is not None, f"no output at {rec.output_uri}"
            got = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(got, _expected(images[by_uri[uri]]), err_msg=uri)
