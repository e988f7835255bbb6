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
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgstream.records import Result
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


class LocalStore:
    """Inputs and outputs in a shared directory (until s3:// lands)."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        (root / "in").mkdir(parents=True)
        self.root = str(root / "in")
        self.out = str(root / "out")

    def put(self, images: dict[str, np.ndarray]) -> list[str]:
        uris = []
        for name, img in images.items():
            path = self.dir / "in" / f"{name}.png"
            cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 0])
            uris.append(str(path))
        return uris

    def get(self, uri: str) -> np.ndarray | None:
        return cv2.imread(uri, cv2.IMREAD_UNCHANGED)


def test_workers_on_three_hosts_survive_one_host_dying(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Three half-core worker hosts share refs in the store; one dies holding uncommitted work."""
    from imgstream.records import ImageRef

    store = LocalStore(tmp_path)
    images = _images(N_IMAGES)
    now = int(time.time() * 1000)
    uris = store.put(images)
    refs = [
        ImageRef(id=name, uri=uri, ts=now, source="multihost")
        for name, uri in zip(images, uris, strict=True)
    ]
    topics = Topics(deployment.bootstrap, partitions=PARTITIONS)
    topics.produce(refs)
    victim = deployment.worker_hosts[1]
    metrics = f"http://{victim.address}:{METRICS_PORT}/metrics"
    args = [
        *("work", "--bootstrap", deployment.bootstrap, "--group", topics.group),
        *("--topic", topics.refs, "--results-topic", topics.results, "--dlq-topic", topics.dlq),
        *("--root", store.root, "--out", store.out, "--ops", OPS, "--threads", "2"),
        *("--max-batch", "4", "--max-wait", "0.2", "--connect-timeout", "30"),
    ]
    started = time.monotonic()
    procs = {}
    for host in deployment.worker_hosts:  # all at once: they join the group together
        extra = ["--metrics-port", str(METRICS_PORT), "--metrics-host", host.address]
        procs[host.name] = deployment.start_worker(host, [*args, *extra])
    stream = topics.stream()
    victim_id = f"{victim.name}-{procs[victim.name].pid}"
    held: list[float] = []

    def victim_holds_work() -> bool:
        stream.poll(0.05)
        if len({r.worker for r in stream.records}) < len(procs):
            return False  # every host is at work first
        held.append(_in_flight(metrics))
        return held[-1] > 0

    wait_until(victim_holds_work, 60, interval=0, what="every host at work, the victim busy")
    done_at_kill = len(stream.ids)
    killed = victim.kill()
    print(
        f"{victim.name}: {killed} process(es) killed {time.monotonic() - started:.1f}s in, "
        f"holding {held[-1]:.0f} uncommitted images; {done_at_kill}/{N_IMAGES} refs done"
    )
    stream.wait_for(images, timeout_s=90)
    print(f"every ref accounted for {time.monotonic() - started:.1f}s in")
    deployment.stop_workers()
    stream.drain()

    results = {r.id: r for r in stream.records if isinstance(r, Result)}
    failures = [r for r in stream.records if not isinstance(r, Result)]
    assert not failures, failures[:3]
    assert set(results) == set(images)
    workers = {r.worker for r in stream.records}
    assert victim_id in workers and len(workers - {victim_id}) == 2, workers
    for name, rec in results.items():
        assert rec.output_uri is not None
        got = store.get(rec.output_uri)
        assert got is not None, f"{name}: no output at {rec.output_uri}"
        np.testing.assert_array_equal(got, _expected(images[name]), err_msg=name)
