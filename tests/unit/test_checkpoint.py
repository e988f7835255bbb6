"""Checkpoint: acknowledgements in, safe commit points out, failed commits not marked."""

from __future__ import annotations

import time

from imgstream.clock import FakeClock
from imgstream.commits.checkpoint import Checkpoint
from imgstream.commits.delivery import Delivery
from imgstream.schema.records import Message, TopicPartition

TP = TopicPartition("refs", 0)


class AckingSink:
    def send(self, topic, key, value, ack):
        ack(None)

    def push(self):
        pass

    def flush(self, timeout_s=None):
        pass

    def close(self, timeout_s=5.0):
        pass


def _msg(offset: int, ts: int = 0) -> Message:
    return Message("refs", 0, offset, None, b"{}", ts)


def test_commit_applies_acks_and_commits_only_below_unfinished_work() -> None:
    clock = FakeClock()
    delivery = Delivery(AckingSink, lambda: None, time.monotonic)
    commits: list[dict[TopicPartition, int]] = []
    cp = Checkpoint(commits.append, delivery, clock)
    try:
        for o in range(4):
            cp.register(_msg(o, ts=100 + o))
        delivery.send("results", None, b"r", (TP, 1))  # 1 done, 0 still running
        assert cp.commit(force=True) == {}
        assert cp.completed == 1 and cp.in_flight() == 3
        delivery.send("results", None, b"r", (TP, 0))
        assert cp.commit(force=True) == {TP: 2}
        assert commits == [{TP: 2}] and cp.committed(TP) == 2
        assert cp.oldest_pending_ms(TP) == 102  # arrivals below the commit are trimmed
        cp.forget([TP])
        assert cp.committed(TP) is None and cp.in_flight() == 0
    finally:
        delivery.close()


def test_commits_are_spaced_unless_forced_and_a_failed_commit_is_redone() -> None:
    clock = FakeClock()
    delivery = Delivery(AckingSink, lambda: None, time.monotonic)
    attempts: list[dict[TopicPartition, int]] = []
    outcomes: list[bool] = []

    def commit(offsets):
        attempts.append(dict(offsets))
        if len(attempts) == 1:
            raise RuntimeError("rebalance in progress")

    cp = Checkpoint(commit, delivery, clock, outcomes.append, every_s=1.0)
    try:
        cp.register(_msg(0))
        cp.complete(TP, 0)
        assert cp.commit() == {}  # failed: not marked committed
        assert cp.committed(TP) is None
        assert cp.commit() == {}  # too soon after the last attempt
        clock.advance(1.0)
        assert cp.commit() == {TP: 1}
        assert attempts == [{TP: 1}, {TP: 1}] and outcomes == [False, True]
    finally:
        delivery.close()


def test_a_run_of_failed_commits_is_one_warning_and_the_recovery_one_more(caplog) -> None:
    clock = FakeClock()
    delivery = Delivery(AckingSink, lambda: None, time.monotonic)
    broken = [True]

    def commit(offsets):
        if broken[0]:
            raise RuntimeError("NotCoordinatorError")

    cp = Checkpoint(commit, delivery, clock)
    try:
        cp.register(_msg(0))
        delivery.send("results", None, b"r", (TP, 0))
        with caplog.at_level("DEBUG", logger="imgstream.commits.checkpoint"):
            for _ in range(50):  # a coordinator away for a second, commits every 20 ms
                assert cp.commit(force=True) == {}
            broken[0] = False
            assert cp.commit(force=True) == {TP: 1}
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == [
            "offset commit failed: NotCoordinatorError (retrying with the next commit)",
            "offset commits succeed again after 50 failures",
        ]
    finally:
        delivery.close()
