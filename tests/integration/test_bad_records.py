"""``imgstream aggregate`` on the real embedded broker over a batch holding bad records.

A result whose ``ts`` is 10**20 once made SQLite raise ``OverflowError``: the
aggregator exited 1, rolled back the whole batch, and did the same on every
restart. Now the bad record is skipped and the good records around it are
stored, and the aggregator exits cleanly.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from imgstream.kafka_io import KafkaSink
from imgstream.schema.codec import encode
from imgstream.schema.records import Result
from imgstream.store import Query, SQLiteStore
from tests.helpers import result_record

pytestmark = pytest.mark.both_brokers


def _result(ref_id: str, ts: int) -> Result:
    return result_record(ref_id, ts=ts)


def test_aggregate_stores_the_good_records_around_a_bad_one(topics, tmp_path) -> None:
    huge_ts = {**json.loads(encode(_result("huge-ts", 1))), "ts": 10**20}
    values = [
        encode(_result("a", 1_000)),
        json.dumps(huge_ts).encode(),
        b"not a record",
        encode(_result("b", 2_000)),
    ]
    sink = KafkaSink(topics.bootstrap)
    for value in values:  # one partition: one batch, in this order
        sink.send_partition(topics.results, 0, None, value).get(30)
    sink.close()
    db = tmp_path / "r.db"
    cmd = [
        sys.executable,
        "-m",
        "imgstream.cli",
        "aggregate",
        "--bootstrap",
        topics.bootstrap,
        "--group",
        topics.group,
        "--results-topic",
        topics.results,
        "--dlq-topic",
        topics.dlq,
        "--db",
        str(db),
        "--idle-exit",
        "6",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stored 2 new records" in done.stdout
    store = SQLiteStore(str(db))
    try:
        assert [r["id"] for r in store.query(Query())] == ["a", "b"]
        assert store.summary()["cam"].ok == 2
    finally:
        store.close()
