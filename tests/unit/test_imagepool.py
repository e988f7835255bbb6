"""ImagePool: the timeout counts running time; stuck threads are replaced, bounded, not awaited."""

from __future__ import annotations

import threading
import time

import pytest

from imgstream.clock import FakeClock
from imgstream.errors import StuckImagesError
from imgstream.worker.imagepool import ImagePool


def test_queued_images_never_time_out() -> None:
    # 16 healthy images of 0.25 s, a 0.6 s timeout, 2 threads: each runs 0.25 s,
    # however long it waited in the queue behind the others.
    clock = FakeClock()
    pool = ImagePool(2, clock, timeout_s=0.6)
    started = [threading.Event() for _ in range(16)]
    go = [threading.Event() for _ in range(16)]

    def image(i: int) -> int:
        started[i].set()
        go[i].wait(10)
        return i

    jobs = [pool.submit(image, i) for i in range(16)]
    for first in range(0, 16, 2):
        assert started[first].wait(10) and started[first + 1].wait(10)
        clock.advance(0.25)  # two images ran for 0.25 s while the rest waited
        assert pool.expire() == []
        go[first].set()
        go[first + 1].set()
        assert jobs[first].wait(10) and jobs[first + 1].wait(10)
    assert clock.monotonic() - 1000.0 == pytest.approx(2.0)  # 8 rounds: waits were far over 0.6
    assert [j.outcome for j in jobs] == list(range(16))
    assert not any(j.timed_out for j in jobs)
    pool.shutdown()


def test_a_stuck_image_times_out_and_the_pool_keeps_its_capacity() -> None:
    clock = FakeClock()
    pool = ImagePool(2, clock, timeout_s=1.0, max_stuck=1)
    stuck_started, release = threading.Event(), threading.Event()
    hung: list[threading.Thread] = []

    def hang() -> None:
        hung.append(threading.current_thread())
        stuck_started.set()
        release.wait(30)

    try:
        stuck = pool.submit(hang)
        assert stuck_started.wait(10)
        clock.advance(0.5)
        assert pool.expire() == []
        clock.advance(0.5)
        assert pool.expire() == [stuck]
        assert stuck.done() and stuck.timed_out and pool.stuck == 1
        # Two images that only finish together: they need two threads at once,
        # which the pool has only if the stuck thread was replaced.
        barrier = threading.Barrier(2, timeout=10)
        pair = [pool.submit(barrier.wait) for _ in range(2)]
        assert all(j.wait(10) for j in pair) and all(j.error is None for j in pair)
        release.set()
        [thread] = hung
        thread.join(10)  # the abandoned thread returns and leaves
        assert not thread.is_alive() and pool.stuck == 0
        assert stuck.outcome is None  # a late result of a timed-out image is dropped
    finally:
        release.set()
        pool.shutdown()


def test_more_stuck_threads_than_allowed_stop_the_worker() -> None:
    clock = FakeClock()
    pool = ImagePool(2, clock, timeout_s=1.0, max_stuck=1)
    release = threading.Event()
    running = threading.Semaphore(0)

    def hang() -> None:
        running.release()
        release.wait(30)

    try:
        pool.submit(hang)
        assert running.acquire(timeout=10)
        clock.advance(1.0)
        pool.expire()  # one stuck: replaced
        pool.submit(hang)
        assert running.acquire(timeout=10)
        clock.advance(1.0)
        with pytest.raises(StuckImagesError) as info:
            pool.expire()
        assert info.value.exit_code == 6
    finally:
        release.set()
        pool.shutdown()


def test_shutdown_does_not_wait_for_a_stuck_thread() -> None:
    clock = FakeClock()
    pool = ImagePool(1, clock, timeout_s=1.0)
    started, release = threading.Event(), threading.Event()

    def hang() -> None:
        started.set()
        release.wait(30)

    try:
        job = pool.submit(hang)
        assert started.wait(10)
        clock.advance(2.0)
        assert pool.expire() == [job]
        began = time.monotonic()
        pool.shutdown(timeout_s=5.0)
        assert time.monotonic() - began < 1.0
        assert not release.is_set()
    finally:
        release.set()
