"""A large image tiled across two workers in a group, fused by the aggregator, queried."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from imgstream.kafka_io import KafkaSink, topic_state
from imgstream.schema.codec import encode
from imgstream.store import Query, SQLiteStore
from imgstream.tiling import grid, tile_meta
from tests.helpers import result_record


def test_tiles_across_two_workers_fuse_into_the_whole_image(
    topics, worker, background, run_cli, tmp_path
) -> None:
    rng = np.random.default_rng(5)
    big = cv2.GaussianBlur(rng.integers(0, 256, (1500, 2300, 3), dtype=np.uint8), (0, 0), 2)
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "big.png"), big)
    store_dir, out, db = tmp_path / "tiles", tmp_path / "out", tmp_path / "r.db"
    spec = "gray|blur:k=5|stats"
    produced = run_cli(
        "produce",
        str(src),
        "--bootstrap",
        topics.bootstrap,
        "--topic",
        topics.refs,
        "--partition-by",
        "sequential",
        "--tile",
        "512",
        "--overlap",
        "2",
        "--tile-store",
        str(store_dir),
    )
    assert produced.returncode == 0, produced.stderr
    assert "1 images tiled" in produced.stdout
    workers = [
        worker(out, store_dir, "--ops", spec, "--max-batch", "2", "--idle-exit", "4")
        for _ in range(2)
    ]
    aggregator = background(
        "aggregate",
        "--bootstrap",
        topics.bootstrap,
        "--group",
        f"agg-{topics.group}",
        "--results-topic",
        topics.results,
        "--dlq-topic",
        topics.dlq,
        "--db",
        str(db),
        # Longer than the two workers' joins on the embedded broker (~4 s each)
        # on a loaded machine: the aggregator must not leave before the first record.
        "--idle-exit",
        "20",
    )
    assert [w.wait(120) for w in workers] == [0, 0]
    assert aggregator.wait(120) == 0
    output = aggregator.output()
    assert "stitched 1" in output
    store = SQLiteStore(str(db))
    try:
        rows = store.query(Query(kind="result"))
    finally:
        store.close()
    parents = [r for r in rows if not r.get("tile")]
    tiles = [r for r in rows if r.get("tile")]
    assert len(parents) == 1 and len(tiles) == 15  # 3 x 5 grid
    assert len({t["worker"] for t in tiles}) == 2, "the tiles did not spread over the group"
    whole = cv2.GaussianBlur(cv2.cvtColor(big, cv2.COLOR_BGR2GRAY), (5, 5), 0)
    fused = cv2.imread(parents[0]["output_uri"], cv2.IMREAD_UNCHANGED)
    assert np.array_equal(fused, whole)
    # The tiles' cores partition the image and each tile's stats cover its core
    # only, so the merged mean and standard deviation are those of the whole
    # output; only the order of the float64 sums differs, hence the tolerances.
    stats = parents[0]["outputs"]["stats"]
    assert stats["brightness"] == pytest.approx(whole.mean(), rel=1e-9)
    assert stats["contrast"] == pytest.approx(whole.std(), rel=1e-6)
    q = run_cli("query", "--db", str(db), "--id", parents[0]["id"], "--format", "json")
    assert q.returncode == 0, q.stderr
    ids = [json.loads(line)["id"] for line in q.stdout.splitlines()]
    assert parents[0]["id"] in ids and len(ids) == 16
    summary = run_cli("query", "--db", str(db), "--summary")
    assert "src" in summary.stdout
    # Feeding the same results again (a new aggregator group re-reads the topics)
    # changes nothing in the store.
    again = run_cli(
        "aggregate",
        "--bootstrap",
        topics.bootstrap,
        "--group",
        f"agg2-{topics.group}",
        "--results-topic",
        topics.results,
        "--dlq-topic",
        topics.dlq,
        "--db",
        str(db),
        "--idle-exit",
        "5",
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stored 0 new records; stitched 0" in again.stdout
    assert run_cli("query", "--db", str(db), "--summary").stdout == summary.stdout


def _result(ref_id: str, ts: int, tile: object = None) -> dict:
    return {**json.loads(encode(result_record(ref_id, ts=ts))), "tile": tile}


def test_aggregate_skips_results_with_malformed_tiles_and_commits_the_batch(
    topics, run_cli, tmp_path
) -> None:
    # Anyone may write to the results topic. Each of these tile fields once
    # raised out of the aggregator before its commit: `imgstream aggregate`
    # exited 1, and again on every restart, never storing the good records.
    [t] = [t for t in grid(250, 130, 100, 5) if (t.row, t.col) == (0, 1)]
    meta = tile_meta("big", t, 250, 130, 5, "/big.png")
    bad_tiles = [
        {k: v for k, v in meta.items() if k != "parent"},
        {**meta, "rows": "x"},
        {**meta, "rows": None},
        {**meta, "rows": 10**30},
        {**meta, "rows": 0},
        [meta],
        "big",
    ]
    values = [json.dumps(_result("a", 1_000)).encode()]
    values += [
        json.dumps(_result(f"big~bad{i}", 1_500, tile)).encode() for i, tile in enumerate(bad_tiles)
    ]
    values.append(json.dumps(_result("big~r0c1", 1_600, meta)).encode())  # a good tile
    values.append(json.dumps(_result("b", 2_000)).encode())
    sink = KafkaSink(topics.bootstrap)
    for value in values:  # one partition: one batch (or a few), in this order
        sink.send_partition(topics.results, 0, None, value).get(30)
    sink.close()
    db = tmp_path / "r.db"
    args = (
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
    )
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stored 3 new records" in done.stdout, done.stdout
    assert f"skipped {len(bad_tiles)} invalid records" in done.stdout, done.stdout
    assert done.stderr.count("invalid 'tile' field") == len(bad_tiles), done.stderr[-3000:]
    store = SQLiteStore(str(db))
    try:
        assert sorted(r["id"] for r in store.query(Query())) == ["a", "b", "big~r0c1"]
    finally:
        store.close()
    [state] = [
        s for s in topic_state(topics.bootstrap, topics.results, topics.group) if s.partition == 0
    ]
    assert state.committed == len(values)
    # A restart finds the batch committed: nothing read again, nothing to trip on.
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stored 0 new records" in again.stdout and "skipped 0" in again.stdout
