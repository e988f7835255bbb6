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

    def run(folder, out):
        proc = run_cli(
            "run",
            str(folder),
            "--out",
            str(out),
            "--bootstrap",
            broker.bootstrap,
            *topics,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]

    run(first[0].parent, tmp_path / "out1")
    records = run(second[0].parent, tmp_path / "out2")
    assert sorted(r["uri"] for r in records if r["kind"] == "result") == sorted(
        str(p) for p in second
    )
    assert sum(r["size"] for r in records if r["kind"] == "batch") == len(second)
