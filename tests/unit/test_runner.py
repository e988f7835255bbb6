"""The Runner against in-memory fakes on a fake clock.

Delivery gates commits; the producer is recreated off the poll thread;
results keep offset order across overlapping batches; a stuck image times
out without holding up its partition or the shutdown; adaptive batching.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import ClassVar

import cv2
import numpy as np
import pytest

from imgstream.clock import FakeClock, SystemClock
from imgstream.config import WorkerConfig
from imgstream.errors import DeliveryError, OutputOutageError
from imgstream.io.outage import OutputGate
from imgstream.metrics import Metrics
from imgstream.ops import build_registry
from imgstream.ops.pipeline import Pipeline, Step, parse_spec
from imgstream.ops.registry import Operation
from imgstream.schema.codec import encode
from imgstream.schema.decoding import decode_record, decode_ref
from imgstream.schema.records import (
    BatchSummary,
    Failure,
    ImageRef,
    Message,
    Result,
    TopicPartition,
)
from imgstream.worker import runner as runner_module
from imgstream.worker.processor import ImageProcessor
from imgstream.worker.runner import Runner

TP = TopicPartition("refs", 0)


class FakeSource:
    """A group member on a fake clock: each poll advances it by the poll's timeout.

    With nothing to hand out, a poll waits (briefly, on an event) for the sink
    to see a record, instead of sleeping: the runner's threads make progress
    while the fake time moves.
    """

    def __init__(self, messages: list[Message], clock: FakeClock | None = None) -> None:
        self.pending = list(messages)
        self.clock = clock if clock is not None else FakeClock()
        self.commits: list[dict[TopicPartition, int]] = []
        self.commit_times: list[float] = []
        self.paused = False
        self.handler = None
        self.polls = 0

    def bind(self, runner):
        self.handler = runner
        return runner

    def poll(self, timeout_s: float) -> list[Message]:
        self.polls += 1
        if self.handler is not None and self.polls == 1:
            self.handler.on_assigned([TP])
        self.clock.advance(timeout_s)
        if self.paused or not self.pending:
            ACTIVITY.wait(0.02)
            ACTIVITY.clear()
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

    def committed(self, tps):
        return dict.fromkeys(tps)

    def close(self):
        pass


#: Set whenever a fake sink sees a record: what a waiting poll wakes up on.
ACTIVITY = threading.Event()


class FakeSink:
    """Acks every record, except the first ``fail`` sends of each instance's life."""

    instances: ClassVar[list[FakeSink]] = []

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.sent: list[tuple[str, bytes]] = []
        self.threads: set[str] = set()
        FakeSink.instances.append(self)

    def send(self, topic, key, value, ack):
        self.threads.add(threading.current_thread().name)
        ACTIVITY.set()
        if self.fail:
            self.fail -= 1
            ack(RuntimeError("broker gone"))
            return
        self.sent.append((topic, value))
        ack(None)

    def push(self):
        pass

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
        cv2.imwrite(str(path), np.full((8, 8, 3), i % 256, np.uint8))
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
    clock = FakeClock()
    processor = ImageProcessor(config, parse_spec("gray", build_registry()), clock)
    return config, processor, messages


def _runner(config, processor, source, sink_factory=None, hooks=None) -> Runner:
    """A Runner on the source's fake clock (the processor's clock is replaced too)."""
    processor.clock = source.clock
    processor.gate.clock = source.clock
    runner = Runner(
        config, processor, source, sink_factory or FakeSink, source.clock, Metrics(), hooks
    )
    return source.bind(runner)


def _op(fn):
    """A one-step pipeline running ``fn(image_number)`` and returning the image."""

    def step(img, params):
        fn(int(img[0, 0, 0]))
        return img, None

    return Pipeline((Step(Operation("probe", step, "test"), {}),))


def _records():
    return [decode_record(v) for s in FakeSink.instances for _, v in s.sent]


def test_everything_is_delivered_then_committed(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path)
    source = FakeSource(messages)
    FakeSink.instances = []
    _runner(config, processor, source).run()
    records = _records()
    results = [r for r in records if isinstance(r, Result)]
    failures = [r for r in records if isinstance(r, Failure)]
    assert sorted(int(r.id) for r in results) == list(range(len(messages) - 1))
    assert [f.error_type for f in failures] == ["bad_message"]
    assert source.commits[-1] == {TP: len(messages)}
    points = [c[TP] for c in source.commits]
    assert points == sorted(points)


def test_a_broken_producer_is_recreated_off_the_poll_thread(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path)
    source = FakeSource(messages)
    FakeSink.instances = []
    made = iter([FakeSink(fail=3), FakeSink()])
    runner = _runner(config, processor, source, lambda: next(made))
    runner.run()
    assert source.commits[-1] == {TP: len(messages)}
    assert runner.metrics.producer_restarts._value.get() == 1
    # re-sends run on the delivery's own thread, never on the poll thread
    assert threading.main_thread().name not in FakeSink.instances[1].threads
    assert "imgstream-resend" in FakeSink.instances[1].threads


def test_undeliverable_records_stop_the_worker_without_committing_them(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path)
    source = FakeSource(messages)
    runner = _runner(config, processor, source, lambda: FakeSink(fail=10**6))
    with pytest.raises(DeliveryError):
        runner.run()
    assert all(TP not in c for c in source.commits)


def test_a_delivery_error_in_the_revocation_callback_leaves_poll_as_itself(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path)

    class Revoking(FakeSource):
        def poll(self, timeout_s):
            out = super().poll(timeout_s)
            if self.polls == 5:
                # kafka-python catches a listener's exception and raises its own
                try:
                    self.handler.on_revoked([TP])
                except Exception as exc:
                    raise RuntimeError("KafkaError: listener failed") from exc
            return out

    source = Revoking(messages)
    runner = _runner(config, processor, source, lambda: FakeSink(fail=10**6))
    with pytest.raises(DeliveryError) as info:
        runner.run()
    assert info.value.exit_code == 4


def test_idle_exit_counts_from_the_first_assignment(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path, n=2)

    class SlowJoin(FakeSource):
        def poll(self, timeout_s: float) -> list[Message]:
            self.clock.advance(1.0)
            if self.polls < 9:  # still joining the group
                self.polls += 1
                return []
            return super().poll(0)

    source = SlowJoin(messages)
    config = replace(config, idle_exit_s=3.0)
    _runner(config, processor, source).run()
    assert source.polls >= 10 and not source.pending
    assert source.commits[-1] == {TP: len(messages)}


def test_max_age_skips_stale_refs_as_failures(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path, n=6)
    source = FakeSource([])
    now = source.clock.wall_ms()
    fresh = []
    for m in messages[:-1]:
        ref = decode_ref(m.value, 0)
        ts = now - 60_000 if int(ref.id) % 2 == 0 else now
        fresh.append(Message("refs", 0, m.offset, None, encode(replace(ref, ts=ts)), 0))
    source.pending = fresh
    config = replace(config, max_age_s=10.0)
    processor = ImageProcessor(config, processor.pipeline, source.clock)
    FakeSink.instances = []
    _runner(config, processor, source).run()
    records = _records()
    stale = sorted(int(r.id) for r in records if isinstance(r, Failure))
    ok = sorted(int(r.id) for r in records if isinstance(r, Result))
    assert stale == [0, 2, 4] and ok == [1, 3, 5]
    assert all(r.error_type == "stale" for r in records if isinstance(r, Failure))
    assert source.commits[-1] == {TP: len(fresh)}


def test_images_start_as_they_join_the_batch_not_when_it_closes(tmp_path) -> None:
    """A live batch's first image is done by the time the window closes."""
    config, processor, messages = _setup(tmp_path, n=3)
    source = FakeSource(messages[:3])
    config = replace(config, max_batch=100, max_wait_s=5.0)
    started: dict[int, float] = {}
    pipeline = _op(lambda i: started.setdefault(i, source.clock.monotonic()))
    processor = ImageProcessor(config, pipeline, source.clock)
    FakeSink.instances = []
    t0 = source.clock.monotonic()
    _runner(config, processor, source).run()
    records = _records()
    (batch,) = [r for r in records if isinstance(r, BatchSummary)]
    assert batch.reason == "time" and batch.size == 3
    assert batch.wait_s == pytest.approx(5.0, abs=0.5)  # the window it stayed open
    # every image ran in the first second of the five-second window
    assert sorted(started) == [0, 1, 2] and max(started.values()) - t0 < 1.0
    assert [int(r.id) for r in records if isinstance(r, Result)] == [0, 1, 2]
    assert source.commits[-1] == {TP: 3}


def test_a_stuck_image_times_out_its_partition_moves_on_and_shutdown_does_not_wait(
    tmp_path,
) -> None:
    release = threading.Event()

    def probe(i: int) -> None:
        if i == 3:
            release.wait(30)

    config, processor, messages = _setup(tmp_path, n=10)
    config = replace(config, image_timeout_s=1.0, threads=2)
    processor = ImageProcessor(config, _op(probe), FakeClock())
    source = FakeSource(messages[:-1])
    FakeSink.instances = []
    runner = _runner(config, processor, source)
    try:
        runner.run()  # returns although image 3's thread is still stuck
        assert not release.is_set()
        records = _records()
        [timeout] = [r for r in records if isinstance(r, Failure)]
        assert timeout.id == "3" and timeout.error_type == "timeout"
        assert sorted(int(r.id) for r in records if isinstance(r, Result)) == [
            i for i in range(10) if i != 3
        ]
        assert source.commits[-1] == {TP: 10}
        assert runner.pool.abandoned_total == 1 and runner.pool.stuck == 1
    finally:
        release.set()


def test_results_leave_in_offset_order_across_overlapping_batches(tmp_path) -> None:
    n, threads = 24, 4
    started = [threading.Event() for _ in range(n)]
    go = [threading.Event() for _ in range(n)]
    done: list[int] = []

    def probe(i: int) -> None:
        started[i].set()
        go[i].wait(30)
        done.append(i)

    def conductor() -> None:
        # Images run `threads` at a time; each group finishes in reverse order,
        # so later batches finish their images before earlier ones.
        for first in range(0, n, threads):
            group = range(first, min(n, first + threads))
            for i in group:
                started[i].wait(30)
            for i in reversed(group):
                go[i].set()

    config, processor, messages = _setup(tmp_path, n=n)
    config = replace(config, max_batch=2, threads=threads, max_inflight_batches=4)
    processor = ImageProcessor(config, _op(probe), FakeClock())
    source = FakeSource(messages[:-1])
    FakeSink.instances = []
    thread = threading.Thread(target=conductor)
    thread.start()
    try:
        _runner(config, processor, source).run()
    finally:
        for event in go:
            event.set()
        thread.join()
    assert done != sorted(done), "the test did not make images finish out of order"
    results = [r for r in _records() if isinstance(r, Result)]
    assert [int(r.id) for r in results] == list(range(n))
    assert source.commits[-1] == {TP: n}


class TrickleSource(FakeSource):
    """Publishes ``plan[k]`` more messages once everything handed out so far is committed."""

    def __init__(self, messages, plan) -> None:
        super().__init__([])
        self.all = list(messages)
        self.plan = list(plan)
        self.published = 0
        self.delivered = 0

    def poll(self, timeout_s):
        self.polls += 1
        if self.handler is not None and self.polls == 1:
            self.handler.on_assigned([TP])
        self.clock.advance(timeout_s)
        settled = self.delivered == (self.commits[-1][TP] if self.commits else 0)
        if settled and self.plan:
            self.published = min(len(self.all), self.published + self.plan.pop(0))
        if self.paused or self.delivered == self.published:
            ACTIVITY.wait(0.02)
            ACTIVITY.clear()
            return []
        out = self.all[self.delivered : self.published][:16]
        self.delivered += len(out)
        return out

    def highwater(self, tp):
        return self.published


def test_adaptive_batches_are_small_at_low_rate_and_grow_under_a_burst(tmp_path) -> None:
    config, processor, messages = _setup(tmp_path, n=80)
    config = replace(config, max_batch=16, max_wait_s=0.5, target_latency_s=2.0, idle_exit_s=1.0)
    processor = ImageProcessor(config, processor.pipeline, FakeClock())
    # 8 refs arrive one at a time, each once the previous one is done; then a burst of 72
    source = TrickleSource(messages[:-1], [1] * 8 + [72])
    FakeSink.instances = []
    _runner(config, processor, source).run()
    sizes = [b.size for b in _records() if isinstance(b, BatchSummary)]
    assert sum(sizes) == 80
    assert sizes[:8] == [1] * 8, sizes  # low rate: batches of one, low latency
    assert max(sizes) == 16, sizes  # the burst: full batches


class OutageSource(FakeSource):
    """Calls ``on_blocked(runner)`` once, after the output store has been out for a few polls."""

    def __init__(self, messages, on_blocked) -> None:
        super().__init__(messages)
        self.on_blocked = on_blocked
        self.blocked_polls = 0
        self.paused_while_blocked = False

    def poll(self, timeout_s):
        out = super().poll(timeout_s)
        if self.handler is not None and self.handler.gate.blocked:
            self.blocked_polls += 1
            if self.blocked_polls == 5:
                self.paused_while_blocked = self.paused
                self.on_blocked(self.handler)
        return out


def _outage_setup(tmp_path):
    config, processor, messages = _setup(tmp_path, n=10)
    out = tmp_path / "out"
    out.write_bytes(b"")  # the output folder replaced by a file: ENOTDIR for every write
    gate = OutputGate(processor.clock, first_backoff_s=0.005, max_backoff_s=0.02)
    processor = ImageProcessor(config, processor.pipeline, processor.clock, gate)
    FakeSink.instances = []
    return config, processor, messages[:-1], out


def test_an_unwritable_output_store_pauses_and_loses_nothing(tmp_path) -> None:
    config, processor, messages, out = _outage_setup(tmp_path)
    seen: dict[str, object] = {}

    def fix(runner: Runner) -> None:
        seen["commits"] = list(source.commits)
        seen["records"] = _records()
        seen["gauge"] = runner.metrics.sink_blocked._value.get()
        out.unlink()  # the store comes back

    source = OutageSource(messages, fix)
    runner = _runner(config, processor, source)
    runner.run()
    assert seen["commits"] == [] and seen["records"] == [] and seen["gauge"] == 1
    assert source.paused_while_blocked
    records = _records()
    assert sorted(int(r.id) for r in records if isinstance(r, Result)) == list(range(10))
    assert not [r for r in records if isinstance(r, Failure)]
    assert source.commits[-1] == {TP: 10}
    assert runner.metrics.sink_blocked._value.get() == 0


def test_stopping_during_an_outage_is_prompt_and_commits_nothing_unwritten(tmp_path) -> None:
    config, processor, messages, _out = _outage_setup(tmp_path)
    source = OutageSource(messages, lambda runner: runner.stop())
    runner = _runner(config, processor, source)
    began = time.monotonic()
    runner.run()
    assert time.monotonic() - began < 5.0
    assert all(TP not in c for c in source.commits)
    assert not [r for r in _records() if isinstance(r, (Result, Failure))]


def test_an_outage_past_max_outage_stops_the_worker_with_its_code(tmp_path) -> None:
    config, processor, messages, _out = _outage_setup(tmp_path)
    processor.gate.max_outage_s = 0.5
    source = OutageSource(messages, lambda runner: None)
    runner = _runner(config, processor, source)
    with pytest.raises(OutputOutageError) as info:
        runner.run()
    assert info.value.exit_code == 5
    assert all(TP not in c for c in source.commits)
    assert not [r for r in _records() if isinstance(r, (Result, Failure))]


class CaughtUpSource(FakeSource):
    """A partition a million messages long, all committed by the group before this worker."""

    END = 1_000_000

    def __init__(self) -> None:
        super().__init__([])
        self.asked: list[list[TopicPartition]] = []

    def highwater(self, tp):
        return self.END

    def committed(self, tps):
        self.asked.append(list(tps))
        return dict.fromkeys(tps, self.END)


def test_a_worker_restarted_on_a_caught_up_partition_reports_no_lag(tmp_path) -> None:
    """The lag is counted from the group's committed offset, not from 0.

    Before: the ledger knew only this worker's own commits, so a fresh worker
    reported the whole topic (1,000,000) as lag and adaptive batching took it
    for a backlog.
    """
    config, processor, _messages = _setup(tmp_path)
    config = replace(config, idle_exit_s=2.0, max_batch=16, target_latency_s=2.0)
    source = CaughtUpSource()
    runner = _runner(config, processor, source)
    runner.run()
    assert runner.metrics.lag.labels("refs", "0")._value.get() == 0
    assert runner.metrics.batch_target._value.get() == 1  # no backlog: small batches
    assert source.asked == [[TP]]  # read once, on assignment


class ClosingSource(FakeSource):
    """Real time; ``close()`` revokes the assignment, as kafka-python's does."""

    def __init__(self, messages) -> None:
        super().__init__(messages)
        self.clock = SystemClock()
        self.revoked_on_close = False

    def poll(self, timeout_s):
        self.polls += 1
        if self.polls == 1:
            self.handler.on_assigned([TP])
        out, self.pending = self.pending[:5], self.pending[5:]
        if not out:
            time.sleep(min(timeout_s, 0.01))
        return out

    def close(self):
        self.revoked_on_close = True
        self.handler.on_revoked([TP])


def test_a_stop_with_a_stuck_image_waits_the_grace_once(tmp_path, monkeypatch) -> None:
    """kafka-python's close() calls on_revoked: it must not wait for the stuck image again.

    Before: the shutdown grace, then half of max.poll.interval.ms more in the
    revocation (about 61 s with the defaults instead of 30).
    """
    config, processor, messages = _setup(tmp_path, n=1)
    monkeypatch.setattr(runner_module, "SHUTDOWN_GRACE_S", 1.0)
    config = replace(config, image_timeout_s=None, idle_exit_s=None, max_poll_interval_ms=16_000)
    entered, release = threading.Event(), threading.Event()

    def stuck(_i: int) -> None:
        entered.set()
        release.wait(60)

    clock = SystemClock()
    processor = ImageProcessor(config, _op(stuck), clock)
    source = ClosingSource(messages[:1])
    runner = source.bind(Runner(config, processor, source, FakeSink, clock, Metrics()))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert entered.wait(10)
        began = time.monotonic()
        runner.stop()
        thread.join(30)
        took = time.monotonic() - began
    finally:
        release.set()
        thread.join(10)
    assert source.revoked_on_close
    assert took < 4.0, f"the stop took {took:.1f}s: the grace (1 s) was waited twice"
    assert all(TP not in c for c in source.commits)  # the stuck image stays uncommitted


def test_a_batch_step_sees_each_micro_batch_in_one_call(tmp_path) -> None:
    """A ``batch`` op gets the images of one micro-batch together; records stay in order."""
    import imgstream
    from imgstream.ops.adapters import operation

    config, _processor, messages = _setup(tmp_path, n=12)
    calls: list[int] = []

    @imgstream.op("sizes", kind="batch")
    def sizes(images):
        calls.append(len(images))
        return [{"n": len(images), "first": int(images[0][0, 0, 0])} for _ in images]

    op = operation(sizes)
    processor = ImageProcessor(config, Pipeline((Step(op, op.defaults()),)), FakeClock())
    source = FakeSource(messages)
    FakeSink.instances = []
    _runner(config, processor, source).run()
    records = _records()
    results = [r for r in records if isinstance(r, Result)]
    assert [int(r.id) for r in results] == list(range(12))
    assert sum(calls) == 12 and max(calls) > 1, calls
    sizes_by_batch = {b.batch_id: b.size for b in records if isinstance(b, BatchSummary)}
    for r in results:  # every image of its batch was in the one call (the junk is not an image)
        batch_images = sum(1 for x in results if x.batch_id == r.batch_id)
        assert r.outputs["sizes"]["n"] == batch_images <= sizes_by_batch[r.batch_id]
    assert [f.error_type for f in records if isinstance(f, Failure)] == ["bad_message"]
    assert source.commits[-1] == {TP: len(messages)}


class SlowCommittedSource(FakeSource):
    """``committed()`` on assignment first fails (a broker error), then blocks 25 s (fake
    time), as it does while a killed member's transaction holds the offsets."""

    def __init__(self, messages) -> None:
        super().__init__(messages)
        self.calls = 0

    def committed(self, tps):
        from imgstream.errors import BrokerError

        self.calls += 1
        if self.calls == 1:
            raise BrokerError("no broker answers")
        self.clock.advance(25.0)
        return dict.fromkeys(tps)


def test_assignment_time_reads_neither_kill_the_worker_nor_count_as_idle(tmp_path) -> None:
    """A broker error reading a new partition's offsets waits for the next step, and the
    time blocked in the read is not idle time (--idle-exit 20 exited with work to do)."""
    config, processor, messages = _setup(tmp_path)
    config = replace(config, idle_exit_s=20.0)
    source = SlowCommittedSource(messages)
    FakeSink.instances = []
    _runner(config, processor, source).run()
    assert source.calls == 2
    results = [r for r in _records() if isinstance(r, Result)]
    assert sorted(int(r.id) for r in results) == list(range(len(messages) - 1))
    assert source.commits[-1] == {TP: len(messages)}
