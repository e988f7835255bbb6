"""MicroBatcher: size, time and budget closes, with a fake clock and no sleeps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from imgstream.worker.batching import BUDGET, REVOKE, SIZE, TIME, MicroBatcher


def test_closes_by_size() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=3, max_wait_s=10)
    assert b.add(1, now=0) == []
    assert b.add(2, now=1) == []
    [batch] = b.add(3, now=2)
    assert batch.items == (1, 2, 3)
    assert batch.reason == SIZE
    assert len(b) == 0


def test_closes_exactly_at_the_time_boundary() -> None:
    b: MicroBatcher[str] = MicroBatcher(max_batch=100, max_wait_s=0.5)
    b.add("a", now=10.0)
    assert b.seconds_until_due(10.2) is not None
    assert abs(b.seconds_until_due(10.2) - 0.3) < 1e-9  # type: ignore[operator]
    assert b.poll(10.4999) is None
    batch = b.poll(10.5)
    assert batch is not None and batch.reason == TIME and batch.items == ("a",)
    assert b.seconds_until_due(10.6) is None


def test_window_counts_from_the_first_item() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=100, max_wait_s=1.0)
    b.add(1, now=0.0)
    b.add(2, now=0.9)
    assert b.seconds_until_due(0.9) == 1.0 - 0.9
    assert b.poll(1.0) is not None


def test_expired_window_closes_before_a_late_item_joins() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=100, max_wait_s=1.0)
    b.add(1, now=0.0)
    [batch] = b.add(2, now=5.0)
    assert batch.items == (1,) and batch.reason == TIME
    assert len(b) == 1


def test_never_emits_an_empty_batch() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=2, max_wait_s=0)
    assert b.poll(100) is None
    assert b.drain(100) is None
    assert b.seconds_until_due(100) is None


def test_budget_closes_before_the_item_that_would_pass_it() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=100, max_wait_s=10, max_cost=100)
    b.add(1, now=0, cost=60)
    [batch] = b.add(2, now=0, cost=60)
    assert batch.items == (1,) and batch.reason == BUDGET and batch.cost == 60
    assert len(b) == 1


def test_drain_has_the_callers_reason() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=10, max_wait_s=10)
    b.add(1, now=0)
    batch = b.drain(1, REVOKE)
    assert batch is not None and batch.reason == REVOKE


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.floats(0, 2)),
        st.tuples(st.just("poll"), st.floats(0, 2)),
        st.tuples(st.just("drain"), st.floats(0, 2)),
    ),
    max_size=200,
)


@given(ops, st.integers(1, 8), st.floats(0, 1.5))
def test_nothing_lost_duplicated_or_reordered(steps, max_batch, max_wait) -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=max_batch, max_wait_s=max_wait)
    now = 0.0
    added: list[int] = []
    out: list[int] = []
    for op, dt in steps:
        now += dt
        if op == "add":
            item = len(added)
            added.append(item)
            for batch in b.add(item, now):
                assert 0 < len(batch) <= max_batch
                out.extend(batch.items)
        elif op == "poll":
            batch = b.poll(now)
            if batch is not None:
                assert 0 < len(batch) <= max_batch
                assert now >= batch.opened_at + max_wait
                out.extend(batch.items)
            due = b.seconds_until_due(now)
            assert due is None or due > 0
        else:
            batch = b.drain(now)
            if batch is not None:
                out.extend(batch.items)
    last = b.drain(now)
    if last is not None:
        out.extend(last.items)
    assert out == added


def test_adaptive_size_follows_the_backlog_within_the_target() -> None:
    from imgstream.worker.batching import adaptive_size

    assert adaptive_size(0, 0.05, 2.0, 16) == 1
    assert adaptive_size(5, 0.05, 2.0, 16) == 5  # all of a small backlog, latency 0.25 s
    assert adaptive_size(15, 0.5, 2.0, 16) == 16  # backlog past what fits: throughput
    assert adaptive_size(2, 0.5, 2.0, 16) == 2
    assert adaptive_size(3, 0.0, 2.0, 16) == 3  # cost not measured yet
