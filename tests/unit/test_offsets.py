"""OffsetTracker: commits never pass unfinished work."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from imgstream.commits.offsets import OffsetTracker


def test_out_of_order_completion_waits_for_the_gap() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    for o in range(5):
        t.register("p", o)
    t.complete("p", 2)
    t.complete("p", 1)
    assert t.commit_point("p") is None
    t.complete("p", 0)
    assert t.commit_point("p") == 3
    t.mark_committed({"p": 3})
    assert t.commits_due() == {}
    t.complete("p", 4)
    assert t.commit_point("p") == 3
    t.complete("p", 3)
    assert t.commits_due() == {"p": 5}


def test_offsets_need_not_be_contiguous() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    for o in (10, 13, 20):  # compacted topic, or transaction markers
        t.register("p", o)
    t.complete("p", 13)
    assert t.commit_point("p") is None
    t.complete("p", 10)
    assert t.commit_point("p") == 14


def test_forget_drops_a_revoked_partition() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.register("p", 0)
    t.forget(["p"])
    t.complete("p", 0)
    assert t.commits_due() == {}
    assert t.in_flight() == 0


@given(st.data())
def test_commit_point_never_passes_unfinished(data) -> None:
    n = data.draw(st.integers(1, 60))
    t: OffsetTracker[str] = OffsetTracker()
    for o in range(n):
        t.register("p", o)
    order = data.draw(st.permutations(range(n)))
    k = data.draw(st.integers(0, n))
    done = set(order[:k])
    for i, o in enumerate(order[:k]):
        t.complete("p", o)
        if data.draw(st.booleans()):
            due = t.commits_due()
            if due:
                t.mark_committed(due)
        point = t.commit_point("p")
        finished = set(order[: i + 1])
        if point is not None:
            assert all(o in finished for o in range(point))
    expected = 0
    while expected in done:
        expected += 1
    assert t.commit_point("p") == (expected if expected else None)
