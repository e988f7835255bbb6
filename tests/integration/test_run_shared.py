"""`imgstream run --bootstrap` on a shared cluster processes only its own refs."""

from __future__ import annotations

import json
import uuid

import pytest

pytestmark = pytest.mark.both_brokers


def test_second_run_skips_the_topics_history(broker, write_images, run_cli, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    topics = [
        "--topic",
        f"refs-{tag}",
        "--results-topic",
        f"res-{tag}",
        "--dlq-topic",
        f"dlq-{tag}",
    ]
    first = write_images(tmp_path / "first", 5)
    second = write_images(tmp_path / "second", 3, size=(20, 30))

    def run(folder, out, *extra):
        proc = run_cli(
            "run",
            str(folder),
            "--out",
            str(out),
            "--bootstrap",
            broker.bootstrap,
            *topics,
            *extra,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]

    # The first run creates the topics with 4 partitions; the second (default 2)
    # finds them: its single worker must read all 4 the topic has.
    run(first[0].parent, tmp_path / "out1", "--partitions", "4")
    records = run(second[0].parent, tmp_path / "out2")
    assert sorted(r["uri"] for r in records if r["kind"] == "result") == sorted(
        str(p) for p in second
    )
    assert sum(r["size"] for r in records if r["kind"] == "batch") == len(second)
