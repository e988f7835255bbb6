"""Benchmark: throughput with 1, 2 and 3 worker hosts on one Kafka and one object store.

Run on purpose (`make bench-multihost`, as root), not in the tests. Five
simulated hosts (``tests/netsim.py``: network namespaces on a bridge, CPU
cgroups): Apache Kafka, moto's S3 server, and three worker hosts capped at
``--cores`` CPUs each (half a core by default). Inputs are 1920x1080 JPEGs in
the store (``s3://BUCKET/in``); outputs go back to it (``s3://BUCKET/out``).
With ``--store local`` the same runs read and write a shared directory
instead, for comparison.

For every pipeline and every host count, on fresh topics (6 partitions) and
a fresh group: one ``imgstream work`` per host starts; once the group has
settled (every partition assigned, each to one worker), the refs are
produced and the clock runs until every ref has a record. The rate counts
results only. The per-image time on the object store is the mean of the
results' ``load`` (GET) and ``store`` (PUT) stage timings; the hosts'
throttled share of CPU periods shows whether the quota was the bottleneck.
``bilateral|gray`` is CPU-heavy (the cap binds); ``gray`` is light (the
store and the broker bind).

    sudo python benchmarks/bench_multihost.py [--n 48] [--hosts 1,2,3] [--cores 0.5]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the simulation lives with the tests
    sys.path.insert(0, str(ROOT))

from imgstream.schema.records import ImageRef, Result  # noqa: E402
from tests.fixtures.kafka import RecordStream, Topics  # noqa: E402
from tests.netsim import Network, available  # noqa: E402
from tests.simdeploy import Deployment  # noqa: E402

PHOTOS = ROOT / "tests" / "data" / "photos"
BUCKET = "bench"
PARTITIONS = 6
ASSIGNED = re.compile(r"partitions (assigned|revoked): (.*)$")


def make_set(n: int) -> dict[str, bytes]:
    """n distinct 1920x1080 JPEGs (quality 90) made from the sample photos."""
    bases = [cv2.imread(str(p)) for p in sorted(PHOTOS.glob("*.jpg"))]
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        img = cv2.resize(bases[i % len(bases)], (1920, 1080), interpolation=cv2.INTER_CUBIC)
        noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out[f"frame{i:04d}"] = buf.tobytes()
    return out


class S3Inputs:
    """Inputs uploaded to the deployment's S3 server; refs and outputs as s3:// URIs."""

    def __init__(self, deploy: Deployment, images: dict[str, bytes]) -> None:
        self.client = deploy.s3()
        self.client.create_bucket(BUCKET)
        self.root = f"s3://{BUCKET}/in"
        self.uris = {
            name: self.client.put(BUCKET, f"in/{name}.jpg", data) for name, data in images.items()
        }

    def out(self, run: str) -> str:
        """Where one run's outputs go."""
        return f"s3://{BUCKET}/out/{run}"

    def present(self, uris: list[str]) -> set[str]:
        """Which of these outputs are in the store."""
        return {f"s3://{BUCKET}/{key}" for key in self.client.keys(BUCKET, "out/")} & set(uris)


class LocalInputs:
    """Inputs in a directory every host sees (the machine's filesystem)."""

    def __init__(self, work: Path, images: dict[str, bytes]) -> None:
        self.dir = work / "store"
        (self.dir / "in").mkdir(parents=True)
        for name, data in images.items():
            (self.dir / "in" / f"{name}.jpg").write_bytes(data)
        self.root = str(self.dir / "in")
        self.uris = {name: f"{self.root}/{name}.jpg" for name in images}

    def out(self, run: str) -> str:
        """Where one run's outputs go."""
        return str(self.dir / "out" / run)

    def present(self, uris: list[str]) -> set[str]:
        """Which of these outputs are there."""
        return {uri for uri in uris if Path(uri).is_file()}


def assignments(log: Path) -> set[int] | None:
    """The worker's current partitions from its log (None before its first assignment)."""
    current: set[int] | None = None
    for line in log.read_text(errors="replace").splitlines():
        match = ASSIGNED.search(line)
        if match and match.group(1) == "assigned":
            parts = re.findall(r"\[(\d+)\]", match.group(2))
            current = {int(p) for p in parts}
        elif match and current is not None:
            current = set()
    return current


def settled(logs: list[Path]) -> bool:
    """Every partition assigned to exactly one of the workers, each worker holding some."""
    held = [assignments(log) for log in logs]
    if any(not h for h in held):
        return False
    union = set().union(*(h or set() for h in held))
    return union == set(range(PARTITIONS)) and sum(len(h or ()) for h in held) == PARTITIONS


def one_run(
    deploy: Deployment, inputs: S3Inputs | LocalInputs, ops: str, hosts: int, threads: int
) -> dict[str, object]:
    """One measured run; its figures."""
    topics = Topics(deploy.bootstrap, partitions=PARTITIONS)
    label = f"{ops.replace('|', '+')}-{hosts}"
    args = ["work", "--bootstrap", deploy.bootstrap, "--group", topics.group]
    args += ["--topic", topics.refs, "--results-topic", topics.results]
    args += ["--dlq-topic", topics.dlq, "--root", inputs.root, "--out", inputs.out(label)]
    args += ["--ops", ops, "--threads", str(threads), "--max-batch", "4", "--max-wait", "0.2"]
    before = {p.name for p in deploy.logs.glob("worker*.log")}
    hosts_used = deploy.worker_hosts[:hosts]
    for host in hosts_used:
        deploy.start_worker(host, args)
    logs = [p for p in deploy.logs.glob("worker*.log") if p.name not in before]
    deadline = time.monotonic() + 120
    while not settled(logs):
        if time.monotonic() > deadline:
            raise SystemExit(f"the group did not settle:\n{deploy.worker_logs()}")
        time.sleep(0.2)
    stats0 = {h.name: h.cgroup.stat() for h in hosts_used}
    now = int(time.time() * 1000)
    refs = [ImageRef(id=n, uri=u, ts=now, source="bench") for n, u in inputs.uris.items()]
    stream = RecordStream(deploy.bootstrap, [topics.results, topics.dlq])
    began = time.perf_counter()
    topics.produce(refs)
    stream.wait_for(inputs.uris, timeout_s=900)
    elapsed = time.perf_counter() - began
    stats1 = {h.name: h.cgroup.stat() for h in hosts_used}
    deploy.stop_workers()
    stream.close()
    topics.close()
    results = {r.id: r for r in stream.records if isinstance(r, Result)}
    failures = [r for r in stream.records if not isinstance(r, Result)]
    outputs = [r.output_uri for r in results.values() if r.output_uri]
    missing = set(outputs) - inputs.present(outputs)
    timings = [r.timings for r in results.values()]

    def stage(name: str) -> float:
        return mean(t.get(name, 0.0) for t in timings) if timings else 0.0

    throttled = {
        name: (stats1[name]["nr_throttled"] - stats0[name]["nr_throttled"])
        / max(1, stats1[name]["nr_periods"] - stats0[name]["nr_periods"])
        for name in stats1
        if "nr_throttled" in stats1[name]
    }
    return {
        "ops": ops,
        "hosts": hosts,
        "images": len(inputs.uris),
        "results": len(results),
        "failures": len(failures),
        "missing_outputs": len(missing),
        "seconds": round(elapsed, 2),
        "images_per_s": round(len(results) / elapsed, 2),
        "load_ms": round(stage("load") * 1000, 1),
        "store_ms": round(stage("store") * 1000, 1),
        "decode_ms": round(stage("decode") * 1000, 1),
        "ops_ms": round(stage("ops") * 1000, 1),
        "encode_ms": round(stage("encode") * 1000, 1),
        "throttled_share": {k: round(v, 2) for k, v in throttled.items()},
        "workers": sorted({r.worker for r in results.values()}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="images per run")
    parser.add_argument("--hosts", default="1,2,3", help="worker host counts to run")
    parser.add_argument("--cores", type=float, default=0.5, help="CPU cap of each worker host")
    parser.add_argument("--threads", type=int, default=2, help="image threads per worker")
    parser.add_argument("--ops", action="append", help="pipelines (default: bilateral|gray, gray)")
    parser.add_argument("--store", choices=("s3", "local"), default="s3")
    args = parser.parse_args()
    ok, reason = available()
    if not ok:
        raise SystemExit(f"cannot simulate hosts here: {reason}")
    counts = [int(h) for h in args.hosts.split(",")]
    pipelines = args.ops or ["bilateral|gray", "gray"]
    work = Path(tempfile.mkdtemp(prefix="imgstream-bench-multihost-"))
    rows = []
    try:
        with Network() as net:
            deploy = Deployment(net, work, workers=max(counts), worker_cores=args.cores)
            began = time.monotonic()
            deploy.start()
            print(
                f"Kafka on {deploy.bootstrap}, S3 on {deploy.endpoint}, ready in "
                f"{time.monotonic() - began:.1f}s; {max(counts)} worker hosts at {args.cores} CPU"
            )
            images = make_set(args.n)
            inputs = S3Inputs(deploy, images) if args.store == "s3" else LocalInputs(work, images)
            for ops in pipelines:
                for hosts in counts:
                    row = one_run(deploy, inputs, ops, hosts, args.threads)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{args.n} x 1920x1080 JPEG per run, store={args.store}, worker hosts at {args.cores} CPU"
    )
    print(
        f"{'pipeline':<16}{'hosts':>6}{'img/s':>8}{'vs 1':>7}{'GET ms':>8}{'PUT ms':>8}"
        f"{'ops ms':>8}  throttled"
    )
    for ops in pipelines:
        base = next((r for r in rows if r["ops"] == ops and r["hosts"] == 1), None)
        for r in (r for r in rows if r["ops"] == ops):
            ratio = (
                f"{float(r['images_per_s']) / float(base['images_per_s']):.2f}x"  # type: ignore[arg-type]
                if base
                else "-"
            )
            print(
                f"{ops:<16}{r['hosts']:>6}{r['images_per_s']:>8}{ratio:>7}{r['load_ms']:>8}"
                f"{r['store_ms']:>8}{r['ops_ms']:>8}  {r['throttled_share']}"
            )
    for ops in pipelines:
        mine = [r for r in rows if r["ops"] == ops]
        get = mean(float(r["load_ms"]) for r in mine)  # type: ignore[arg-type]
        put = mean(float(r["store_ms"]) for r in mine)  # type: ignore[arg-type]
        print(f"{ops}: per image on the store {get + put:.0f} ms (GET {get:.0f} + PUT {put:.0f})")
    bad = [r for r in rows if r["failures"] or r["missing_outputs"] or r["results"] != r["images"]]
    if bad:
        raise SystemExit(f"{len(bad)} runs lost images or outputs: {bad}")


if __name__ == "__main__":
    main()
