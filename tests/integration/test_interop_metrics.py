"""A third-party client (librdkafka) drives a worker; /metrics passes promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request

import confluent_kafka

from imgstream.broker import free_port
from tests.integration.conftest import stop, write_images


def test_librdkafka_refs_get_results(topics, tmp_path) -> None:
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
    worker = topics.start_worker(tmp_path / "out", root, "--max-wait", "0.1")
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
    try:
        deadline = time.monotonic() + 60
        while len(kinds["result"]) < 5 or not kinds["failure"]:
            assert time.monotonic() < deadline, kinds
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            record = json.loads(msg.value())
            kinds[record["kind"]].append(record)
    finally:
        consumer.close()
        stop(worker)
    assert sorted(r["id"] for r in kinds["result"]) == sorted(p.stem for p in paths)
    assert all(r["source"] == "rdkafka" and r["v"] == 1 for r in kinds["result"])
    assert kinds["failure"][0]["error"]["type"] == "bad_message"


def test_metrics_pass_promtool(topics, tmp_path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs the Debian package prometheus"
    root = tmp_path / "in"
    paths = write_images(root, 6)
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    from tests.integration.conftest import refs_for

    topics.produce(refs_for([*paths, root / "bad.png"]))
    port = free_port()
    worker = topics.start_worker(tmp_path / "out", root, "--metrics-port", str(port))
    try:
        reader = topics.records()
        from tests.integration.conftest import collect_until

        collect_until(reader, {p.stem for p in paths} | {"bad"}, timeout_s=60)
        time.sleep(1.2)  # one lag refresh
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        stop(worker)
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert 'imgstream_images_total{status="ok"} 6.0' in text
    assert 'imgstream_failures_total{type="decode_error"} 1.0' in text
    assert "imgstream_batch_size_images_count" in text
    assert 'imgstream_stage_seconds_bucket{le="0.0005",stage="decode"}' in text
    assert f'imgstream_consumer_lag_messages{{partition="0",topic="{topics.refs}"}} 0.0' in text
    assert 'imgstream_rebalances_total{event="assigned"}' in text
