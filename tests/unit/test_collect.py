"""The run collector: records decoded through the codec, counted once, bad ones skipped."""

from __future__ import annotations

import io
import json

from imgstream.consumers.launcher import JobSummary, collect
from imgstream.schema.codec import encode
from imgstream.schema.records import BatchSummary, Failure, Message, Result
from tests.helpers import result_record


def _result(ref_id: str, latency_ms: int) -> Result:
    return result_record(ref_id, width=10, height=20, worker="w1", latency_ms=latency_ms)


class FakeReader:
    """Hands out prepared polls, then nothing."""

    def __init__(self, polls: list[list[bytes]]) -> None:
        self.polls = polls
        self.offset = 0

    def poll(self, timeout_s: float) -> list[Message]:
        values = self.polls.pop(0) if self.polls else []
        out = []
        for value in values:
            out.append(Message("results", 0, self.offset, None, value, 0))
            self.offset += 1
        return out


def test_collect_counts_each_ref_once_and_skips_bad_records() -> None:
    batch = BatchSummary("b", "w1", 3, 2, 1, 400, "size", 0.1, 0.2, (0,), 1)
    fail = Failure("not_found", "gone", "refs", 0, 2, "w1", 1, id="c")
    polls = [
        [encode(_result("a", 5)), b"garbage", encode(batch)],
        [
            encode(_result("a", 7)),  # a duplicate: written, not counted again
            json.dumps({**json.loads(encode(_result("b", 9))), "ts": 10**20}).encode(),
            encode(_result("b", 3)),
            encode(fail),
            encode(_result("other", 1)),  # not one of ours
        ],
    ]
    sink = io.StringIO()
    summary = JobSummary(expected=3)
    collect(FakeReader(polls), {"a", "b", "c"}, None, sink, summary, stall_timeout_s=0)
    assert (summary.ok, dict(summary.failures), summary.missing) == (2, {"not_found": 1}, [])
    assert summary.pixels == 2 * 200
    assert sorted(summary.latencies_ms) == [3, 5]
    assert (summary.records, summary.duplicates, summary.batches) == (4, 1, 1)
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [(r["kind"], r.get("id")) for r in lines] == [
        ("result", "a"),
        ("batch", None),
        ("result", "a"),
        ("result", "b"),
        ("failure", "c"),
    ]


def test_collect_gives_up_when_no_progress_is_possible() -> None:
    summary = JobSummary(expected=2)
    reader = FakeReader([[encode(_result("a", 5))]])
    collect(reader, {"a", "b"}, None, io.StringIO(), summary, stall_timeout_s=0)
    assert summary.ok == 1
    assert summary.missing == ["b"]
