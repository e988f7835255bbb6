"""The Runner against in-memory fakes: delivery gates commits; producer recovery."""

from __future__ import annotations

import time
from typing import ClassVar

import cv2
import numpy as np
import pytest

from stream.clock import SystemClock
from stream.codec import decode_record, encode
from stream.config import WorkerConfig
from stream.errors import DeliveryError
from stream.ops import build_registry
from stream.pipeline import parse_spec
from stream.processor import ImageProcessor
from stream.records import Failure, ImageRef, Message, Result, TopicPartition
from stream.runner import Runner

TP = TopicPartition("refs", 0)


class FakeSource:
    def __init__(self, messages: list[Message]) -> None:
        self.pending = list(messages)
        self.commits: list[dict[TopicPartition, int]] = []
        self.paused = False
        self.handler = None

    def bind(self, handler) -> FakeSource:
        self.handler = handler
        return self

    def poll(self, timeout_s: float) -> list[Message]:
        if self.handler is not None:
            self.handler.on_assigned([TP])
            self.handler = None
        if self.paused or not self.pending:
            time.sleep(min(timeout_s, 0.01))
            return []
        out, self.pending = self.pending[:5], self.pending[5:]
        return out

    def commit(self, offsets):
        self.commits.append(dict(offsets))

    def assignment(self):
        return [TP]

    def pause(self, tps):
        self.paused = True

    def resume(self, tps):
        self.paused = False

    def highwater(self, tp):
        return 0

    def close(self):
        pass


class FakeSink:
    """Acks every record, except the first ``fail`` sends of each instance's life."""

    instances: ClassVar[list[FakeSink]] = []

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.sent: list[tuple[str, bytes]] = []
        FakeSink.instances.append(self)

    def send(self, topic, key, value, ack):
        if self.fail:
            self.fail -= 1
            ack(RuntimeError("broker gone"))
            return
        self.sent.append((topic, value))
        ack(None)

    def flush(self, timeout_s=None):
        pass

    def close(self, timeout_s=5.0):
        pass


def _setup(tmp_path, n=12):
    root = tmp_path / "in"
    root.mkdir()
    messages = []
    for i in range(n):
        path = root / f"{i}.png"
        cv2.imwrite(str(path), np.full((8, 8, 3), i * 10, np.uint8))
        ref = ImageRef(id=str(i), uri=str(path), ts=0)
        messages.append(Message("refs", 0, i, None, encode(ref), 0))
    messages.append(Message("refs", 0, n, None, b"junk", 0))
    config = WorkerConfig(
        bootstrap="fake",
        out_dir=str(tmp_path / "out"),
        roots=(str(root),),
        max_batch=4,
        max_wait_s=0.05,
        threads=2,
        idle_exit_s=0.3,
        worker_id="w",
    )
    processor = ImageProcessor(config, parse_spec("gray", build_registry()), SystemClock())
    return config, processor, messages


def test_everything_is_delivered_then_committed(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path)
    source = FakeSource(messages)
    FakeSink.instances = []
    runner = Runner(config, processor, lambda r: source.bind(r), FakeSink, SystemClock())
    runner.run()
    records = [decode_record(v) for s in FakeSink.instances for _, v in s.sent]
    results = [r for r in records if isinstance(r, Result)]
    failures = [r for r in records if isinstance(r, Failure)]
    assert sorted(int(r.id) for r in results) == list(range(len(messages) - 1))
    assert [f.error_type for f in failures] == ["bad_message"]
    assert source.commits[-1] == {TP: len(messages)}
    points = [c[TP] for c in source.commits]
    assert points == sorted(points)


def test_a_broken_producer_is_recreated(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path)
    source = FakeSource(messages)
    FakeSink.instances = []
    made = iter([FakeSink(fail=3), FakeSink()])
    runner = Runner(config, processor, lambda r: source.bind(r), lambda: next(made), SystemClock())
    runner.run()
    assert source.commits[-1] == {TP: len(messages)}
    assert runner.metrics.producer_restarts._value.get() == 1


def test_undeliverable_records_stop_the_worker_without_committing_them(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path)
    source = FakeSource(messages)
    runner = Runner(
        config, processor, lambda r: source.bind(r), lambda: FakeSink(fail=10**6), SystemClock()
    )
    with pytest.raises(DeliveryError):
        runner.run()
    assert all(TP not in c for c in source.commits)


def test_idle_exit_counts_from_the_first_assignment(tmp_path) -> None:
    from stream.clock import FakeClock

    config, processor, messages = _setup(tmp_path, n=2)
    clock = FakeClock()

    class SlowJoin(FakeSource):
        polls = 0

        def poll(self, timeout_s: float) -> list[Message]:
            clock.advance(1.0)
            self.polls += 1
            if self.polls < 10:  # still joining the group
                return []
            return super().poll(0)

    source = SlowJoin(messages)
    config = type(config)(**{**config.__dict__, "idle_exit_s": 3.0})
    runner = Runner(config, processor, lambda r: source.bind(r), FakeSink, clock)
    runner.run()
    assert source.polls >= 10 and not source.pending
    assert source.commits[-1] == {TP: len(messages)}
