"""A third-party client (librdkafka) drives a worker; /metrics passes promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request

import confluent_kafka
import pytest

from imgstream.broker import free_port
from tests.helpers import refs_for, wait_until

pytestmark = pytest.mark.both_brokers


def scrape(port: int) -> str:
    """The worker's /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_librdkafka_refs_get_results(topics, worker, write_images, tmp_path) -> None:
    root = tmp_path / "in"
    paths = write_images(root, 5)
    producer = confluent_kafka.Producer({"bootstrap.servers": topics.bootstrap})
    for p in paths:
        ref = {
            "v": 1,
            "kind": "ref",
            "id": p.stem,
            "uri": p.name,
            "source": "rdkafka",
            "ts": int(time.time() * 1000),
        }
        producer.produce(topics.refs, json.dumps(ref).encode(), key=b"rdkafka")
    producer.produce(topics.refs, b"garbage", key=b"rdkafka")
    assert producer.flush(10) == 0
    w = worker(tmp_path / "out", root, "--max-wait", "0.1")
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": topics.bootstrap,
            "group.id": f"reader-{topics.group}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topics.results, topics.dlq])
    kinds: dict[str, list[dict]] = {"result": [], "failure": [], "batch": []}

    def all_arrived() -> bool:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            record = json.loads(msg.value())
            kinds[record["kind"]].append(record)
        return len(kinds["result"]) >= 5 and len(kinds["failure"]) >= 1

    try:
        wait_until(all_arrived, 60, interval=0, what="5 results and 1 failure via librdkafka")
    finally:
        consumer.close()
    assert w.stop() == 0
    assert sorted(r["id"] for r in kinds["result"]) == sorted(p.stem for p in paths)
    assert all(r["source"] == "rdkafka" and r["v"] == 1 for r in kinds["result"])
    assert all(r["output_uri"] and r["lineage"]["topic"] == topics.refs for r in kinds["result"])
    (failure,) = kinds["failure"]
    assert failure["error"]["type"] == "bad_message"
    assert failure["partition"] is not None


def test_metrics_pass_promtool(topics, worker, write_images, tmp_path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs the Debian package prometheus"
    root = tmp_path / "in"
    paths = write_images(root, 6)
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    topics.produce(refs_for([*paths, root / "bad.png"]))
    port = free_port()
    w = worker(tmp_path / "out", root, "--metrics-port", str(port))
    topics.stream().wait_for({p.stem for p in paths} | {"bad"}, timeout_s=60)
    lag = re.compile(
        rf'imgstream_consumer_lag_messages\{{partition="(\d+)",topic="{topics.refs}"\}} (\S+)'
    )

    def caught_up() -> str | None:
        # The lag gauges refresh on their own period: wait until every partition's
        # reads 0 rather than sleeping for one period and hoping.
        text = scrape(port)
        gauges = {int(p): float(v) for p, v in lag.findall(text)}
        return text if sorted(gauges) == [0, 1, 2, 3] and set(gauges.values()) == {0.0} else None

    text = wait_until(caught_up, 30, interval=0.2, what="consumer lag 0 on all 4 partitions")
    assert w.stop() == 0
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert 'imgstream_images_total{status="ok"} 6.0' in text
    assert 'imgstream_failures_total{type="decode_error"} 1.0' in text
    assert "imgstream_batch_size_images_count" in text
    assert 'imgstream_stage_seconds_bucket{le="0.0005",stage="decode"}' in text
    assert 'imgstream_rebalances_total{event="assigned"} 1.0' in text
    # No ids or paths in label values (DESIGN: Observability).
    assert str(root) not in text and "img00000" not in text


def test_a_restarted_worker_on_caught_up_partitions_reports_no_lag(
    topics, worker, write_images, tmp_path
) -> None:
    """The lag is counted from the group's committed offsets, read on assignment.

    Before: a worker counted only its own commits, so one restarted on a
    caught-up topic reported every partition's whole length as lag.
    """
    root = tmp_path / "in"
    paths = write_images(root, 8)
    topics.produce(refs_for(paths))
    first = worker(tmp_path / "out", root)
    topics.stream().wait_for({p.stem for p in paths}, timeout_s=60)
    assert first.stop() == 0  # everything committed by the group
    port = free_port()
    second = worker(tmp_path / "out", root, "--metrics-port", str(port))
    lag = re.compile(
        rf'imgstream_consumer_lag_messages\{{partition="(\d+)",topic="{topics.refs}"\}} (\S+)'
    )
    seen: list[dict[int, float]] = []

    def all_reported() -> bool:
        try:
            gauges = {int(p): float(v) for p, v in lag.findall(scrape(port))}
        except OSError:  # the metrics server is not up yet
            return False
        seen.append(gauges)
        return sorted(gauges) == [0, 1, 2, 3]

    wait_until(all_reported, 60, interval=0.2, what="lag gauges for all 4 partitions")
    assert second.stop() == 0
    assert all(v == 0.0 for gauges in seen for v in gauges.values()), seen
