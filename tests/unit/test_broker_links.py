"""BrokerLinks: kafka-python's connection events in, one line per broker outage out."""

from __future__ import annotations

import logging

import pytest

from imgstream.clock import FakeClock
from imgstream.kafka_io.links import CONNECTED, LOST, BrokerLinks


class Conn:
    """What the filter reads of a kafka-python connection."""

    def __init__(self, node_id: object, peer: tuple[str, int] | None = None) -> None:
        self.node_id = node_id
        self.transport = Transport(peer) if peer else None


class Transport:
    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer

    def getPeer(self) -> tuple[str, int]:
        return self.peer


def event(msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("kafka.net.connection", level, __file__, 1, msg, args, None)


@pytest.fixture
def links() -> tuple[BrokerLinks, FakeClock]:
    clock = FakeClock()
    return BrokerLinks(clock.monotonic, passes=lambda r: False), clock


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "imgstream.kafka_io.links"]


def test_an_outage_is_one_warning_however_many_reconnects_fail(links, caplog) -> None:
    tracker, clock = links
    tracker.filter(event(CONNECTED, Conn(2, ("10.0.0.2", 9092)), level=logging.INFO))
    assert warnings(caplog) == []  # a first connection is no news
    for _ in range(40):  # reconnects every 50 ms..1 s, from every client of the process
        tracker.filter(event(LOST, Conn(2), "KafkaConnectionError: 111 ECONNREFUSED"))
        tracker.filter(event(LOST, Conn("coordinator-2"), "socket disconnected"))
        clock.advance(0.25)
    assert tracker.down() == ["2"]
    tracker.filter(event(CONNECTED, Conn(2, ("10.0.0.2", 9092)), level=logging.INFO))
    assert warnings(caplog) == [
        "lost the connection to Kafka broker 2 at 10.0.0.2:9092 "
        "(KafkaConnectionError: 111 ECONNREFUSED); reconnecting in the background",
        "connected to Kafka broker 2 at 10.0.0.2:9092 again, 10.0 s after losing it "
        "(80 failed attempts)",
    ]
    assert (tracker.outages, tracker.recoveries, tracker.down()) == (1, 1, [])


def test_each_broker_and_each_outage_is_told_apart(links, caplog) -> None:
    tracker, _clock = links
    for node in (1, 3, 1):
        tracker.filter(event(LOST, Conn(node), "socket disconnected"))
    tracker.filter(event(CONNECTED, Conn(1), level=logging.INFO))
    tracker.filter(event(LOST, Conn(1), "socket disconnected"))  # a second outage
    assert tracker.outages == 3 and tracker.down() == ["1", "3"]
    assert len(warnings(caplog)) == 4


def test_bootstrap_links_and_other_records_are_not_outages(links, caplog) -> None:
    tracker, _clock = links
    tracker.filter(event(LOST, Conn("bootstrap-0"), "ECONNREFUSED"))
    tracker.filter(event("%s: Connection closed", Conn(1), level=logging.INFO))
    tracker.filter(event("something else %s", "x"))
    assert tracker.outages == 0 and warnings(caplog) == []


def test_kafka_records_go_on_only_where_kafka_logs_are_wanted() -> None:
    shown = BrokerLinks(passes=lambda r: r.levelno >= logging.WARNING)
    assert shown.filter(event(LOST, Conn(1), "x")) is True
    assert shown.filter(event(CONNECTED, Conn(1), level=logging.INFO)) is False
