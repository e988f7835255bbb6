"""Per-source state: in order, snapshotted before commits, restored to the committed offset."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from imgstream.clock import FakeClock
from imgstream.commits.state import (
    Snapshot,
    SourceStates,
    StateRecord,
    decode_state_record,
    encode_state_record,
)
from imgstream.metrics import Metrics
from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec
from imgstream.schema.codec import encode
from imgstream.schema.records import ImageRef, Message, Result, TopicPartition
from imgstream.worker.processor import ImageProcessor
from imgstream.worker.runner import Runner
from tests.unit.test_runner import FakeSink, FakeSource, _records, _setup

TP = TopicPartition("refs", 0)
SPEC = "motion:width=64,blur=5,min_area=4|dedupe:bits=2"


def _record(cur: Snapshot, prev: Snapshot | None = None) -> StateRecord:
    return StateRecord("g", "h", TP, "cam", cur, prev)


def test_a_record_round_trips_with_arrays_and_scalars() -> None:
    state = {"0:motion": {"background": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    prev = {"1:dedupe": {"hash": "00ff00ff00ff00ff"}}
    record = _record(Snapshot(9, 10, state), Snapshot(4, 5, prev))
    back = decode_state_record(encode_state_record(record))
    assert (back.tp, back.source, back.cur.last, back.cur.upto) == (TP, "cam", 9, 10)
    np.testing.assert_array_equal(
        back.cur.state["0:motion"]["background"], np.arange(6).reshape(2, 3)
    )
    assert back.prev is not None and back.prev.state == prev
    for junk in (b"", b"\x00\x00\x00\x02{}", b"\x00\x00\x00\x05xxxxx"):
        with pytest.raises(ValueError):
            decode_state_record(junk)


def test_the_snapshot_of_the_committed_offset_is_chosen_or_none() -> None:
    cur, prev = Snapshot(19, 20, {}), Snapshot(9, 10, {})
    assert _record(cur, prev).choose(20) is cur
    assert _record(cur, prev).choose(35) is cur  # no frame of the source since
    assert _record(cur, prev).choose(10) is prev  # written, but its commit did not happen
    assert _record(cur, prev).choose(7) is None  # a gap: start fresh
    assert _record(cur).choose(12) is None


def test_frames_of_one_source_take_turns_in_offset_order() -> None:
    states = SourceStates("g", "h")
    key = (TP, "cam")
    for offset in range(5):
        states.reserve(key, offset)
    seen: list[int] = []

    def frame(offset: int) -> None:
        if offset == 2:
            states.skip(key, offset)  # failed before its pipeline
            return
        with states.turn(key, offset) as state:
            seen.append(offset)
            state["0:count"] = {"n": len(seen)}

    threads = [threading.Thread(target=frame, args=(o,)) for o in (4, 3, 2, 1, 0)]
    for t in threads:
        t.start()
        time.sleep(0.01)  # later frames first: they must wait
    for t in threads:
        t.join(10)
    assert seen == [0, 1, 3, 4]
    [record] = states.snapshot({TP: 5})
    assert (record.cur.last, record.cur.state) == (4, {"0:count": {"n": 4}})


class MemoryStates:
    """The state topic in memory: the last value per key."""

    topic = "imgstream.state"

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        self.writes = 0

    def write(self, records) -> None:
        for key, value in records:
            self.values[key] = value
            self.writes += 1

    def load(self, tps):
        return list(self.values.values())

    def close(self, timeout_s: float = 5.0) -> None:
        pass


class ResumingSource(FakeSource):
    """A partition whose group committed ``at`` before this worker."""

    def __init__(self, messages, at: int) -> None:
        super().__init__(messages)
        self.at = at

    def committed(self, tps):
        return dict.fromkeys(tps, self.at)


def _frames(tmp_path, n: int = 24) -> list[Message]:
    """Two sources in one partition: a square moving across each."""
    root = tmp_path / "in"
    root.mkdir(exist_ok=True)
    out = []
    for i in range(n):
        source = "a" if i % 3 else "b"
        img = np.full((48, 96, 3), 40, np.uint8)
        x = 4 + (i * 7) % 70
        cv2.rectangle(img, (x, 10), (x + 14, 30), (230, 230, 230), -1)
        path = root / f"{i:03d}.png"
        cv2.imwrite(str(path), img)
        ref = ImageRef(id=f"{i:03d}", uri=str(path), ts=i, source=source)
        out.append(Message("refs", 0, i, source.encode(), encode(ref), i))
    return out


def _run(config, source, store) -> list[Result]:
    processor = ImageProcessor(config, parse_spec(SPEC, build_registry(())), FakeClock())
    processor.clock = processor.gate.clock = source.clock
    FakeSink.instances = []
    runner = Runner(config, processor, source, FakeSink, source.clock, Metrics(), state_store=store)
    source.bind(runner).run()
    return [r for r in _records() if isinstance(r, Result)]


def test_a_worker_that_takes_over_restores_each_source_to_the_committed_offset(tmp_path) -> None:
    """Results equal one sequential pass over the frames, across two workers."""
    config, _, _ = _setup(tmp_path, n=1)
    frames = _frames(tmp_path)
    store = MemoryStates()
    first = _run(config, FakeSource(frames[:13]), store)
    assert store.writes >= 2  # a snapshot per source
    second = _run(config, ResumingSource(frames[13:], 13), store)
    got = {r.id: r.outputs for r in first + second}
    pipeline = parse_spec(SPEC, build_registry(()))
    states: dict[str, dict] = {}
    for msg in frames:
        ref_id = f"{msg.offset:03d}"
        img = cv2.imread(str(tmp_path / "in" / f"{ref_id}.png"))
        _, want = pipeline.run(img, None, states.setdefault(msg.key.decode(), {}))
        assert got[ref_id] == want, ref_id
    assert sum(o["motion"]["first"] for o in got.values()) == 2  # one per source


def test_state_that_does_not_match_the_committed_offset_is_never_applied(tmp_path, caplog) -> None:
    """The group's offsets were reset to the start: both sources start fresh, said once each."""
    config, _, _ = _setup(tmp_path, n=1)
    frames = _frames(tmp_path)
    store = MemoryStates()
    _run(config, FakeSource(frames[:13]), store)
    results = _run(config, ResumingSource(frames, 0), store)
    firsts = {r.source for r in results if r.outputs["motion"]["first"]}
    assert firsts == {"a", "b"}
    assert caplog.text.count("does not match the committed offset") == 2


def test_another_pipeline_s_state_is_not_applied(tmp_path) -> None:
    config, _, _ = _setup(tmp_path, n=1)
    frames = _frames(tmp_path)
    store = MemoryStates()
    _run(config, FakeSource(frames[:13]), store)
    for key in list(store.values):  # the same frames, written by another pipeline
        record = decode_state_record(store.values.pop(key))
        other = StateRecord(record.group, "other", record.tp, record.source, record.cur, None)
        store.values[other.key()] = encode_state_record(other)
    results = _run(config, ResumingSource(frames[13:], 13), store)
    assert {r.source for r in results if r.outputs["motion"]["first"]} == {"a", "b"}


def test_a_frame_that_began_before_a_forget_adds_no_version() -> None:
    """A rewind (or revocation) forgets a partition while a frame of it still runs."""
    states = SourceStates("g", "h")
    key = (TP, "cam")
    states.reserve(key, 7)
    with states.turn(key, 7) as state:
        state["0:count"] = {"n": 1}
        states.forget([TP])  # the partition was rewound meanwhile
    assert states.snapshot({TP: 100}) == []
