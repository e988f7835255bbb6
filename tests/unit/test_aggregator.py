"""Store and aggregator without a broker: dedupe, accumulators, fusion, incomplete parents."""

from __future__ import annotations

import json
import random

import cv2
import numpy as np
import pytest

from imgstream.clock import FakeClock
from imgstream.consumers.aggregator import JOIN_GRACE_S, Aggregator, AggregatorLoop
from imgstream.io.png import encode_png
from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec
from imgstream.schema.decoding import decode_record
from imgstream.schema.records import Message, Result, TopicPartition
from imgstream.store import Query, SQLiteStore
from imgstream.tiling import TileView, grid, tile_meta
from tests.unit.test_tiling import BAD_TILES


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def send(self, topic, key, value, ack):
        self.sent.append((topic, json.loads(value)))
        ack(None)

    def flush(self, timeout_s=None):
        pass

    def close(self, timeout_s=5.0):
        pass


def msg(record: dict, offset: int = 0) -> Message:
    return Message("results", 0, offset, None, json.dumps(record).encode(), 0)


def result(ref_id: str, source="cam", ts=0, outputs=None, **kw) -> dict:
    base = {
        "v": 1,
        "kind": "result",
        "id": ref_id,
        "uri": f"/{ref_id}.jpg",
        "source": source,
        "output_uri": f"/out/{ref_id}.png",
        "pipeline": "gray",
        "pipeline_hash": "h1",
        "width": 10,
        "height": 10,
        "channels": 1,
        "bytes_in": 100,
        "outputs": outputs or {},
        "timings": {},
        "batch_id": "b",
        "worker": "w",
        "ts": ts,
        "latency_ms": 5,
        "lineage": {"topic": "refs", "partition": 0, "offset": 0, "sha256": None, "versions": {}},
    }
    base.update(kw)
    return base


def failure(ref_id: str, kind="not_found", source="cam", ts=0, **kw) -> dict:
    return {
        "v": 1,
        "kind": "failure",
        "id": ref_id,
        "uri": "x",
        "source": source,
        "error": {"type": kind, "message": "m"},
        "topic": "refs",
        "partition": 0,
        "offset": 1,
        "attempts": 1,
        "batch_id": "b",
        "worker": "w",
        "ts": ts,
        **kw,
    }


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(str(tmp_path / "r.db"))
    yield s
    s.close()


def snapshot(store: SQLiteStore):
    return (
        [json.dumps(r, sort_keys=True) for r in store.query(Query())],
        {k: v.to_dict() for k, v in store.summary("minute").items()},
    )


def test_replaying_records_leaves_the_store_unchanged(store) -> None:
    records = [
        result(
            "a",
            outputs={
                "stats": {"brightness": 100.0},
                "faces": {"count": 1, "boxes": [[1, 2, 3, 4]]},
            },
        ),
        result("b", source="door", ts=61_000, outputs={"stats": {"brightness": 50.0}}),
        failure("c"),
        failure(None, kind="bad_message", offset=9),
    ]
    assert store.add_many(records) == 4
    before = snapshot(store)
    assert store.add_many(records) == 0
    assert store.add_many(list(reversed(records))) == 0
    assert snapshot(store) == before
    summary = store.summary()
    assert summary["cam"].ok == 1
    assert summary["cam"].failures == {"not_found": 1, "bad_message": 1}
    assert summary["cam"].mean_brightness == 100.0
    assert summary["door"].pixels == 100


def test_query_filters(store) -> None:
    store.add_many(
        [
            result("a", ts=1000, outputs={"faces": {"count": 1, "boxes": [[0, 0, 5, 5]]}}),
            result("b", ts=2000, source="door"),
            result("c", ts=3000, pipeline_hash="h2", pipeline="identity"),
            failure("d", ts=4000),
        ]
    )
    ids = lambda **kw: [r["id"] for r in store.query(Query(**kw))]  # noqa: E731
    assert ids(source="door") == ["b"]
    assert ids(since_ms=2000, until_ms=4000) == ["b", "c"]
    assert ids(pipeline="h2") == ids(pipeline="identity") == ["c"]
    assert ids(has="faces") == ["a"]
    assert ids(id="d") == ["d"]
    assert ids(kind="failure") == ["d"]


def _tiles(tmp_path, img, spec, tile, overlap):
    pipeline = parse_spec(spec, build_registry())
    h, w = img.shape[:2]
    records = []
    for t in grid(w, h, tile, overlap):
        b = t.halo
        out, outputs = pipeline.run(
            img[b.y : b.y + b.h, b.x : b.x + b.w].copy(), TileView(t.core_in_halo(), b.x, b.y)
        )
        k = t.core_in_halo()
        path = tmp_path / f"t{t.row}_{t.col}.png"
        path.write_bytes(encode_png(out[k.y : k.y + k.h, k.x : k.x + k.w]))
        records.append(
            result(
                f"big~r{t.row}c{t.col}",
                output_uri=str(path),
                pipeline=pipeline.canonical,
                pipeline_hash=pipeline.hash,
                width=t.core.w,
                height=t.core.h,
                outputs=outputs,
                tile=tile_meta("big", t, w, h, overlap, "/big.png"),
            )
        )
    return pipeline, records


def test_fusion_in_any_order_with_duplicates(tmp_path, store, photos) -> None:
    img = cv2.imread(str(photos[0]))
    pipeline, tiles = _tiles(tmp_path, img, "blur:k=5|stats|hist:bins=8", 150, 2)
    sink = Sink()
    agg = Aggregator(store, sink, "results", "dlq", FakeClock(), "agg", str(tmp_path / "fused"))
    stream = tiles + random.Random(1).sample(tiles, 4)
    random.Random(2).shuffle(stream)
    for i, record in enumerate(stream):
        agg.handle([msg(record, i)])
    parents = [r for t, r in sink.sent if r["id"] == "big"]
    assert len(parents) == 1 and agg.fused == 1
    parent = parents[0]
    whole, data = pipeline.run(img.copy())
    assert np.array_equal(cv2.imread(parent["output_uri"], cv2.IMREAD_UNCHANGED), whole)
    assert parent["width"] == img.shape[1] and parent["height"] == img.shape[0]
    assert parent["outputs"]["hist"] == data["hist"]
    assert parent["outputs"]["stats"]["brightness"] == pytest.approx(data["stats"]["brightness"])
    assert store.get("big", pipeline.hash) == parent
    assert store.summary()["cam"].ok == 1  # the parent counts, its tiles do not
    # the emitted parent is a codec record whose lineage names its tiles
    fused = decode_record(json.dumps(parent).encode())
    assert isinstance(fused, Result)
    assert sorted(fused.lineage.tiles) == sorted(t["id"] for t in tiles)


def test_missing_tiles_become_an_incomplete_failure(tmp_path, store, photos) -> None:
    img = cv2.imread(str(photos[0]))
    _, tiles = _tiles(tmp_path, img, "gray", 200, 0)
    clock = FakeClock()
    sink = Sink()
    agg = Aggregator(store, sink, "results", "dlq", clock, "agg", tile_timeout_s=10)
    agg.handle([msg(r, i) for i, r in enumerate(tiles[:-1])])
    agg.check_timeouts()
    assert sink.sent == []
    clock.advance(11)
    agg.check_timeouts()
    [(topic, record)] = sink.sent
    assert topic == "dlq" and record["error"]["type"] == "incomplete"
    last = tiles[-1]["tile"]
    assert f"r{last['row']}c{last['col']}" in record["error"]["message"]


def test_a_failed_tile_makes_its_parent_incomplete_at_once(store) -> None:
    sink = Sink()
    agg = Aggregator(store, sink, "results", "dlq", FakeClock(), "agg")
    agg.handle([msg(failure("big~r0c1", kind="decode_error", parent="big"))])
    [(_topic, record)] = sink.sent
    assert record["id"] == "big" and "big~r0c1" in record["error"]["message"]


def test_the_store_skips_a_record_it_cannot_store_and_keeps_the_rest(store) -> None:
    records = [
        result("a", ts=1000),
        result("huge-ts", ts=10**20),
        # Passes the ts check, then overflows SQLite half way (after its row went in).
        result("huge-box", outputs={"faces": {"count": 1, "boxes": [[2**70, 0, 1, 1]]}}),
        failure("bad-tile", tile={"parent": "p", "row": "x", "cols": 2, "col": 0}),
        failure("c", ts=2000),
    ]
    assert store.add_many(records) == 2
    assert store.rejected == 3
    assert [r["id"] for r in store.query(Query())] == ["a", "c"]
    assert store.get("huge-box", "h1") is None  # rolled back whole, row and all
    assert store.query(Query(has="faces")) == []
    summary = store.summary()
    assert summary["cam"].ok == 1  # the rejected results left no trace in the accumulators
    assert summary["cam"].failures == {"not_found": 1}


def test_the_aggregator_keeps_running_over_a_batch_with_bad_records(tmp_path, store) -> None:
    agg = Aggregator(store, Sink(), "results", "dlq", FakeClock(), "agg")
    good = [result("a", ts=1000), failure("b", ts=1500)]
    values = [
        json.dumps(good[0]).encode(),
        json.dumps(result("huge-ts", ts=10**20)).encode(),
        json.dumps(result("neg-ts", ts=-1)).encode(),
        b"not json at all",
        json.dumps({"v": 1, "kind": "result", "id": "half"}).encode(),
        json.dumps(good[1]).encode(),
    ]
    messages = [Message("results", 0, i, None, v, 0) for i, v in enumerate(values)]
    assert agg.handle(messages) == 2
    assert [r["id"] for r in store.query(Query())] == ["a", "b"]
    assert agg.rejected == 4
    # and it goes on: the next batch is stored as usual
    assert agg.handle([msg(result("c", ts=3000), 9)]) == 1


@pytest.mark.parametrize("tile", BAD_TILES.values(), ids=BAD_TILES.keys())
def test_a_result_with_a_malformed_tile_is_skipped_and_the_batch_goes_on(store, tile) -> None:
    # Any client can write to the results topic: such a record once raised
    # KeyError/TypeError/ValueError out of handle() before the commit, and the
    # aggregator crash-looped on it, never committing the good records around it.
    sink = Sink()
    agg = Aggregator(store, sink, "results", "dlq", FakeClock(), "agg")
    batch = [result("a", ts=1000), result("big~r0c1", tile=tile), result("b", ts=2000)]
    assert agg.handle([msg(r, i) for i, r in enumerate(batch)]) == 2
    assert [r["id"] for r in store.query(Query())] == ["a", "b"]
    assert agg.rejected == 1
    assert agg.pending == {} and sink.sent == []
    assert agg.handle_records(batch) == 0  # the launcher's path: already decoded
    assert agg.rejected == 2


@pytest.mark.parametrize("parent", [7, ["big"], {"id": "big"}, True])
def test_a_failure_with_a_malformed_parent_is_skipped(store, parent) -> None:
    sink = Sink()
    agg = Aggregator(store, sink, "results", "dlq", FakeClock(), "agg")
    batch = [failure("big~r0c1", parent=parent), result("a", ts=1000)]
    assert agg.handle([msg(r, i) for i, r in enumerate(batch)]) == 1
    assert [r["id"] for r in store.query(Query())] == ["a"]
    assert agg.rejected == 1 and sink.sent == []


def test_a_failure_with_an_empty_parent_is_stored_as_no_tile(store) -> None:
    # A worker echoes the parent its ref named: "" for a ref whose tile said "".
    sink = Sink()
    agg = Aggregator(store, sink, "results", "dlq", FakeClock(), "agg")
    assert agg.handle([msg(failure("big~r0c1", kind="bad_message", parent=""))]) == 1
    assert agg.rejected == 0 and sink.sent == []


def test_a_malformed_tile_already_in_the_store_does_not_stop_the_timeouts(store) -> None:
    # Stored by a version that did not check tile fields: tile r0c0 says rows "x".
    tiles = grid(250, 130, 100, 5)
    metas = {(t.row, t.col): tile_meta("big", t, 250, 130, 5, "/big.png") for t in tiles}
    legacy = result("big~r0c0", tile={**metas[(0, 0)], "rows": "x"})
    assert store.add_many([legacy]) == 1
    clock = FakeClock()
    sink = Sink()
    agg = Aggregator(store, sink, "results", "dlq", clock, "agg", tile_timeout_s=10)
    assert agg.handle([msg(result("big~r0c1", tile=metas[(0, 1)]))]) == 1
    clock.advance(11)
    agg.check_timeouts()
    [(topic, record)] = sink.sent
    assert topic == "dlq" and record["id"] == "big"
    assert record["error"]["message"].startswith("5 of 6 tiles missing")
    assert "r0c0" in record["error"]["message"]


def test_a_tile_whose_grid_is_huge_times_out_without_listing_the_whole_grid(store) -> None:
    # A 1 px tile grid of a 40000 x 40000 image: 1.6e9 positions, one present.
    meta = {
        "parent": "big",
        "row": 0,
        "col": 0,
        "rows": 40_000,
        "cols": 40_000,
        "core": [0, 0, 1, 1],
        "halo": [0, 0, 1, 1],
        "overlap": 0,
        "width": 40_000,
        "height": 40_000,
    }
    clock = FakeClock()
    sink = Sink()
    agg = Aggregator(store, sink, "results", "dlq", clock, "agg", tile_timeout_s=10)
    assert agg.handle([msg(result("big~r0c0", tile=meta))]) == 1
    clock.advance(11)
    agg.check_timeouts()
    [(_topic, record)] = sink.sent
    assert record["error"]["message"].startswith("1599999999 of 1600000000 tiles missing")
    assert "r0c1, r0c2" in record["error"]["message"]


class JoiningSource:
    """A member that is assigned partitions only after ``join_s``, then gets ``messages``
    at the given times; each poll takes its timeout on the fake clock."""

    def __init__(self, clock: FakeClock, join_s: float, messages: dict[float, Message]) -> None:
        self.clock = clock
        self.join_s = join_s
        self.messages = dict(messages)
        self.started = clock.monotonic()
        self.commits: list[dict] = []

    def poll(self, timeout_s: float) -> list[Message]:
        self.clock.advance(timeout_s)
        now = self.clock.monotonic() - self.started
        due = [t for t in self.messages if t <= now]
        return [self.messages.pop(t) for t in sorted(due)]

    def assignment(self) -> list[TopicPartition]:
        joined = self.clock.monotonic() - self.started >= self.join_s
        return [TopicPartition("results", 0)] if joined else []

    def commit(self, offsets: dict) -> None:
        self.commits.append(offsets)

    def close(self) -> None:
        pass


def test_idle_time_counts_from_the_first_assignment(store) -> None:
    """A join that took longer than --idle-exit once ended the aggregator before its
    first record (test_tiles under CI load: "stored 0 new records")."""
    clock = FakeClock()
    agg = Aggregator(store, Sink(), "results", "dlq", clock, "agg")
    source = JoiningSource(clock, join_s=10.0, messages={12.0: msg(result("a"), 0)})
    loop = AggregatorLoop(agg, source, poll_s=0.2, idle_exit_s=6.0)
    loop.run()
    assert loop.records == 1 and source.commits == [{TopicPartition("results", 0): 1}]
    assert 12.0 + 6.0 <= clock.monotonic() - source.started <= 12.0 + 6.0 + 0.5


def test_a_group_that_never_assigns_still_ends_after_the_join_grace(store) -> None:
    clock = FakeClock()
    agg = Aggregator(store, Sink(), "results", "dlq", clock, "agg")
    source = JoiningSource(clock, join_s=float("inf"), messages={})
    AggregatorLoop(agg, source, poll_s=0.5, idle_exit_s=6.0).run()
    assert JOIN_GRACE_S + 6.0 <= clock.monotonic() - source.started <= JOIN_GRACE_S + 7.0
