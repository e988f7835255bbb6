"""The Runner against in-memory fakes: delivery gates commits; producer recovery."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import ClassVar

import cv2
import numpy as np
import pytest

from imgstream.clock import SystemClock
from imgstream.codec import decode_record, decode_ref, encode
from imgstream.config import WorkerConfig
from imgstream.errors import DeliveryError
from imgstream.ops import build_registry
from imgstream.pipeline import parse_spec
from imgstream.processor import ImageProcessor
from imgstream.records import Failure, ImageRef, Message, Result, TopicPartition
from imgstream.runner import Runner

TP = TopicPartition("refs", 0)


class FakeSource:
    def __init__(self, messages: list[Message]) -> None:
        self.pending = list(messages)
        self.commits: list[dict[TopicPartition, int]] = []
        self.commit_times: list[float] = []
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
        self.commit_times.append(time.monotonic())

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
        cv2.imwrite(str(path), np.full((8, 8, 3), (i * 10) % 256, np.uint8))
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
    from imgstream.clock import FakeClock

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


def _run_collect(config, processor, source):
    FakeSink.instances = []
    Runner(config, processor, lambda r: source.bind(r), FakeSink, SystemClock()).run()
    return [decode_record(v) for s in FakeSink.instances for _, v in s.sent]


def test_max_age_skips_stale_refs_as_failures(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path, n=6)
    now = SystemClock().wall_ms()
    fresh = []
    for m in messages[:-1]:
        ref = decode_ref_(m)
        old = int(ref.id) % 2 == 0
        ts = now - 60_000 if old else now
        fresh.append(Message("refs", 0, m.offset, None, encode(replace(ref, ts=ts)), 0))
    config = replace(config, max_age_s=10.0)
    processor = ImageProcessor(config, processor.pipeline, SystemClock())
    source = FakeSource(fresh)
    records = _run_collect(config, processor, source)
    stale = sorted(int(r.id) for r in records if isinstance(r, Failure))
    ok = sorted(int(r.id) for r in records if isinstance(r, Result))
    assert stale == [0, 2, 4] and ok == [1, 3, 5]
    assert all(r.error_type == "stale" for r in records if isinstance(r, Failure))
    assert source.commits[-1] == {TP: len(fresh)}


def test_image_timeout_settles_a_stuck_image(tmp_path) -> None:
    from imgstream.ops.registry import Operation
    from imgstream.pipeline import Pipeline, Step

    finished: list[float] = []

    def slow(img, params):
        if img[0, 0, 0] == 30:  # image "3"
            time.sleep(2.0)
            finished.append(time.monotonic())
        return img, None

    config, processor, messages = _setup(tmp_path, n=6)
    config = replace(config, image_timeout_s=0.3, threads=3)
    pipeline = Pipeline((Step(Operation("slow", slow, "test"), {}),))
    processor = ImageProcessor(config, pipeline, SystemClock())
    source = FakeSource(messages[:-1])
    records = _run_collect(config, processor, source)
    # the timeout was recorded and committed past while the image was still stuck
    assert (
        source.commit_times
        and finished
        and min(t for t, c in zip(source.commit_times, source.commits, strict=True) if c[TP] == 6)
        < finished[0]
    )
    [timeout] = [r for r in records if isinstance(r, Failure)]
    assert timeout.id == "3" and timeout.error_type == "timeout"
    assert len([r for r in records if isinstance(r, Result)]) == 5
    assert source.commits[-1] == {TP: 6}


class TrickleSource(FakeSource):
    """Publishes messages over time: ``plan`` is how many become available per poll."""

    def __init__(self, messages, plan) -> None:
        super().__init__([])
        self.all = list(messages)
        self.plan = list(plan)
        self.published = 0
        self.delivered = 0

    def poll(self, timeout_s):
        if self.handler is not None:
            self.handler.on_assigned([TP])
            self.handler = None
        if self.plan:
            self.published = min(len(self.all), self.published + self.plan.pop(0))
        time.sleep(0.01)
        if self.paused:
            return []
        out = self.all[self.delivered : self.published][:16]
        self.delivered += len(out)
        return out

    def highwater(self, tp):
        return self.published


def test_adaptive_batches_are_small_at_low_rate_and_grow_under_a_burst(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path, n=80)
    config = replace(config, max_batch=16, max_wait_s=0.5, target_latency_s=2.0, idle_exit_s=1.0)
    processor = ImageProcessor(config, processor.pipeline, SystemClock())
    # 8 refs arrive one at a time, slowly; then a burst of the other 72 at once
    plan = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0] * 8 + [72]
    source = TrickleSource(messages[:-1], plan)
    FakeSink.instances = []
    Runner(config, processor, lambda r: source.bind(r), FakeSink, SystemClock()).run()
    batches = [decode_record(v) for s in FakeSink.instances for _, v in s.sent]
    sizes = [b.size for b in batches if b.__class__.__name__ == "BatchSummary"]
    assert sum(sizes) == 80
    assert max(sizes[:6]) <= 2, sizes  # low rate: small batches, low latency
    assert max(sizes) == 16, sizes  # the burst: full batches


def decode_ref_(m: Message) -> ImageRef:
    return decode_ref(m.value, 0)
