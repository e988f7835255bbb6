"""Crash isolation's pure parts: start counts, their records, and the verdicts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgstream.commits.attempts import (
    RUN,
    AttemptBook,
    decode_counts,
    decode_record,
    encode_counts,
    encode_record,
)
from imgstream.commits.isolation import CrashGuard
from imgstream.schema.records import Message, TopicPartition

TP = TopicPartition("refs", 0)
TP1 = TopicPartition("refs", 1)


@given(st.dictionaries(st.integers(0, 10_000), st.integers(1, 5), max_size=200))
def test_counts_round_trip_through_runs(counts: dict[int, int]) -> None:
    runs = encode_counts(counts)
    assert decode_counts(runs) == counts
    assert len(runs) <= len(counts)


def test_consecutive_offsets_with_one_count_are_one_run() -> None:
    assert encode_counts(dict.fromkeys(range(100, 600), 1)) == [[100, 600, 1]]
    assert encode_counts({5: 1, 6: 2, 7: 2, 9: 2}) == [[5, 6, 1], [6, 8, 2], [9, 10, 2]]


@pytest.mark.parametrize(
    "runs", ["x", [[1, 2]], [[2, 1, 1]], [[1, 2, 0]], [[-1, 2, 1]], [[1, 2, True]], [["1", 2, 1]]]
)
def test_malformed_runs_are_refused(runs) -> None:
    with pytest.raises(ValueError):
        decode_counts(runs)


def test_a_record_round_trips_and_anything_else_is_refused() -> None:
    value = encode_record("g", TP, {3: 1, 4: 2}, "w-1")
    assert decode_record(value) == ("g", TP, {3: 1, 4: 2})
    for junk in (b"x", b"{}", b'{"v":1,"kind":"ref"}', b'{"v":1,"kind":"attempts","group":1}'):
        with pytest.raises(ValueError):
            decode_record(junk)


def test_images_an_earlier_life_started_are_isolated_then_dead_lettered() -> None:
    book = AttemptBook(max_attempts=2)
    book.load(TP, {10: 1, 11: 2, 9: 2}, committed=10)  # 9 is below the commit: done
    assert book.suspects(TP) == 2
    assert book.verdict(TP, 9) is RUN
    assert book.verdict(TP, 10).action == "isolate"
    assert book.verdict(TP, 11).action == "crashed" and book.verdict(TP, 11).attempts == 2
    assert book.verdict(TP, 12) is RUN


def test_a_count_is_the_loaded_one_plus_one_however_often_this_life_restarts_it() -> None:
    book = AttemptBook()
    book.load(TP, {10: 1}, committed=10)
    book.start(TP, [10, 11])
    book.start(TP, [10, 11])  # an aborted transaction re-read them
    assert book.counts(TP, pending=[10, 11]) == {10: 2, 11: 1}


def test_recorded_counts_keep_unrun_suspects_and_drop_finished_images() -> None:
    book = AttemptBook()
    book.load(TP, {10: 1, 11: 1}, committed=10)
    book.start(TP, [10])
    assert book.counts(TP, pending=[10, 11]) == {10: 2, 11: 1}
    book.settle(TP, 10)
    book.start(TP, [12])
    assert book.counts(TP, pending=[11, 12]) == {11: 1, 12: 1}
    book.forget([TP])
    assert book.counts(TP, pending=[11, 12]) == {}


class MemoryStore:
    def __init__(self, loaded=None) -> None:
        self.loaded = loaded or {}
        self.records: list[tuple[TopicPartition, dict[int, int]]] = []

    def load(self, tps):
        return {tp: self.loaded[tp] for tp in tps if tp in self.loaded}

    def record(self, tp, counts):
        self.records.append((tp, dict(counts)))

    def close(self, timeout_s=5.0):
        pass


def _msg(tp: TopicPartition, offset: int) -> Message:
    return Message(tp.topic, tp.partition, offset, None, b"{}", 0)


def test_the_guard_holds_everything_behind_a_suspect_and_runs_it_alone() -> None:
    store = MemoryStore({TP: {11: 1, 13: 2}})
    pending: dict[TopicPartition, set[int]] = {TP: set(), TP1: set()}
    guard = CrashGuard(AttemptBook(2), store, lambda tp: pending[tp])
    guard.assigned([TP, TP1], {TP: 10, TP1: None})
    fetched = [_msg(TP, o) for o in range(10, 15)] + [_msg(TP1, 0)]
    for m in fetched:
        pending[m.tp].add(m.offset)
    runnable = guard.admit(fetched)
    assert [m.offset for m in runnable] == [10]  # before the first suspect
    guard.started(runnable)
    assert store.records[-1] == (TP, {10: 1, 11: 1, 13: 2})  # unrun suspects kept
    assert guard.release() == []
    pending[TP].discard(10)
    msg, verdict = guard.next_alone()
    assert (msg.offset, verdict.action) == (11, "isolate")
    assert store.records[-1] == (TP, {11: 2, 13: 2})  # its raised count, before it runs
    pending[TP].discard(11)
    assert guard.next_alone() is None  # 11 settled; 12 is no suspect
    assert [m.offset for m in guard.release()] == [12]
    pending[TP].discard(12)
    msg, verdict = guard.next_alone()
    assert (msg.offset, verdict.action, verdict.attempts) == (13, "crashed", 2)
    assert [(m.tp, m.offset) for m in guard.release()] == [(TP, 14), (TP1, 0)]
    assert guard.holding == 0 and guard.next_alone() is None


def test_without_a_store_nothing_is_recorded_or_held() -> None:
    guard = CrashGuard(AttemptBook(), None, lambda tp: set())
    guard.assigned([TP], {TP: 0})
    msgs = [_msg(TP, o) for o in range(3)]
    assert guard.admit(msgs) == msgs
    guard.started(msgs)
    assert guard.holding == 0
