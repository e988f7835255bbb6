"""The watch loop on a fake clock: each settled file once, only deliveries remembered."""

from __future__ import annotations

import json
import os

import pytest

from imgstream.clock import FakeClock
from imgstream.partitioning import make_partitioner
from imgstream.producers.watch import State, watch


class _Delivery:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def succeeded(self) -> bool:
        return self.ok


class _FakeSink:
    """Records what was sent; refuses the ids in ``refuse``."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.sent: list[dict] = []
        self.refuse = refuse

    def partitions(self, topic: str) -> int:
        return 2

    def send_partition(self, topic: str, partition: int, key, value: bytes) -> _Delivery:
        record = json.loads(value)
        self.sent.append(record)
        return _Delivery(not any(name in record["uri"] for name in self.refuse))

    def flush(self, timeout_s: float | None = None) -> None:
        pass


def _loop(tmp_path, sink, steps: int, during=None) -> tuple[int, list[tuple[str, bool]]]:
    """Run watch() for ``steps`` listings on a fake clock (0.5 s apart)."""
    clock = FakeClock()
    seen: list[tuple[str, bool]] = []
    count = {"n": 0}

    def sleep(seconds: float) -> None:
        count["n"] += 1
        clock.advance(seconds)
        if during is not None:
            during(count["n"])

    produced = watch(
        [str(tmp_path / "in")],
        sink,
        "refs",
        make_partitioner("sequential"),
        State(str(tmp_path / "state.json")),
        clock,
        lambda: count["n"] >= steps,
        settle_s=1.0,
        on_produced=lambda ref, ok: seen.append((os.path.basename(ref.uri), ok)),
        interval_s=0.5,
        sleep=sleep,
    )
    return produced, seen


def test_watch_produces_each_settled_file_once_and_remembers_only_deliveries(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"a" * 10)
    (tmp_path / "in" / "bad.jpg").write_bytes(b"b" * 10)

    def later(step: int) -> None:
        if step == 3:  # appears while watching
            (tmp_path / "in" / "c.jpg").write_bytes(b"c" * 10)

    sink = _FakeSink(refuse=frozenset({"bad"}))
    produced, seen = _loop(tmp_path, sink, steps=12, during=later)
    assert produced == 2
    assert sorted(seen) == [("a.jpg", True), ("bad.jpg", False), ("c.jpg", True)]
    # a restart sends only what was not delivered
    again = _FakeSink()
    produced, seen = _loop(tmp_path, again, steps=6)
    assert seen == [("bad.jpg", True)] and produced == 1


def test_a_state_file_that_is_not_ours_is_refused(tmp_path) -> None:
    path = tmp_path / "state.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError):
        State(str(path))
