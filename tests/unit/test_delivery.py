"""Delivery: a failed send recreates the sink, and the replaced sink is closed for good."""

from __future__ import annotations

import threading
import time

import pytest

from imgstream.commits.delivery import Ack, Delivery
from imgstream.errors import DeliveryError
from imgstream.schema.records import TopicPartition

TP = TopicPartition("refs", 0)


class FakeSink:
    """A sink with an I/O thread, closed the way kafka-python's producer is.

    ``stuck``: records it holds cannot be flushed, so a close that waits raises
    (kafka-python's ``KafkaTimeoutError``) before it stops the thread; a close
    with no time to wait (0) stops it at once, dropping what is unsent.
    """

    def __init__(self, failing: bool = False, stuck: bool = False) -> None:
        self.failing = failing
        self.stuck = stuck
        self.sent: list[bytes] = []
        self.closes: list[float] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._stop.wait, name="fake-io", daemon=True)
        self.thread.start()

    def send(self, topic: str, key: bytes | None, value: bytes, ack: Ack) -> None:
        self.sent.append(value)
        ack(ConnectionError("broker gone") if self.failing else None)

    def push(self) -> None:
        pass

    def flush(self, timeout_s: float | None = None) -> None:
        pass

    def close(self, timeout_s: float = 5.0) -> None:
        self.closes.append(timeout_s)
        if self.stuck and timeout_s > 0:
            raise TimeoutError("Timeout waiting for future")
        self._stop.set()
        self.thread.join()


def _deliver_once(
    sinks: list[FakeSink], on_restart=lambda: None
) -> list[tuple[TopicPartition, int]]:
    made = iter(sinks)
    delivery = Delivery(lambda: next(made), on_restart, time.monotonic)
    try:
        delivery.send("results", None, b"record", (TP, 7))
        assert delivery.wait_idle(10.0)
        done: list[tuple[TopicPartition, int]] = []
        delivery.drain(lambda tp, offset: done.append((tp, offset)))
        return done
    finally:
        delivery.close(1.0)


def test_a_replaced_sink_whose_close_raises_is_still_closed() -> None:
    old, new = FakeSink(failing=True, stuck=True), FakeSink()
    assert _deliver_once([old, new]) == [(TP, 7)]
    assert new.sent == [b"record"]  # the new sink took the record
    assert old.closes and old.closes[0] > 0  # a graceful close first, bounded
    assert old.closes[-1] == 0  # then one that does not wait
    assert not old.thread.is_alive()  # its I/O thread is gone, not leaked


def test_a_replaced_sink_is_closed_even_when_the_restart_callback_fails() -> None:
    old, new = FakeSink(failing=True), FakeSink()

    def on_restart() -> None:
        raise RuntimeError("metrics are gone")

    assert _deliver_once([old, new], on_restart) == [(TP, 7)]
    assert old.closes and not old.thread.is_alive()


def test_a_sink_that_cannot_be_recreated_at_first_is_tried_again() -> None:
    # The broker is still away when the failed producer is replaced: the factory
    # raises (kafka-python found no broker in --connect-timeout). The record waits
    # and the next creation, once the broker is back, sends it.
    old, new = FakeSink(failing=True), FakeSink()
    tries = {"n": 0}

    def factory() -> FakeSink:
        tries["n"] += 1
        if tries["n"] == 1:
            return old
        if tries["n"] <= 3:
            raise ConnectionError("no broker answered in 10.0 s")
        return new

    delivery = Delivery(factory, lambda: None, time.monotonic, restart_backoff_s=0.0)
    try:
        delivery.send("results", None, b"record", (TP, 7))
        assert delivery.wait_idle(10.0)
        done: list[tuple[TopicPartition, int]] = []
        delivery.drain(lambda tp, offset: done.append((tp, offset)))
    finally:
        delivery.close(1.0)
    assert done == [(TP, 7)]
    assert tries["n"] == 4 and new.sent == [b"record"]
    assert old.closes and not old.thread.is_alive()


def test_a_sink_that_cannot_be_recreated_for_the_whole_patience_gives_the_delivery_up() -> None:
    # Each creation waits for a broker (--connect-timeout), here 30 s of a fake clock:
    # tries at 0, 30, 60, 90 s go on, the one at 120 s gives up.
    old = FakeSink(failing=True)
    made = iter([old])
    now = {"s": 0.0}
    tries = []

    def factory() -> FakeSink:
        sink = next(made, None)
        if sink is None:
            tries.append(now["s"])
            now["s"] += 30.0
            raise ConnectionError("no broker answered in 30.0 s")
        return sink

    delivery = Delivery(factory, lambda: None, lambda: now["s"], restart_backoff_s=0.0)
    try:
        delivery.send("results", None, b"first", (TP, 7))
        delivery.send("results", None, b"second", (TP, 8))
        assert delivery.wait_idle(10.0)
        with pytest.raises(
            DeliveryError, match=r"could not recreate the producer for 120s \(5 tries\)"
        ):
            delivery.drain(lambda tp, offset: None)
    finally:
        delivery.close(1.0)
    assert tries == [0.0, 30.0, 60.0, 90.0, 120.0]
