"""The kafka-python 3.0 transport fix: bytes that arrive with the end of a connection count."""

from __future__ import annotations

import socket

import pytest
from kafka.net.selector import NetworkSelector
from kafka.net.transport import KafkaTCPTransport

from imgstream.kafka_io.config import compat


class _Protocol:
    """Records what the transport hands over, in order."""

    _sensors = None

    def __init__(self) -> None:
        self.events: list[object] = []

    def data_received(self, data: bytes) -> None:
        self.events.append(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(type(exc).__name__ if exc else None)


@pytest.mark.skipif(not compat.applies(), reason="the fix is for kafka-python 3.0 only")
def test_bytes_sent_just_before_the_peer_closes_reach_the_protocol_first() -> None:
    compat.apply()
    compat.apply()  # idempotent
    net = NetworkSelector()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    protocol = _Protocol()
    transport = KafkaTCPTransport(net, ours)
    transport.set_protocol(protocol)
    # a broker refusing a password: the error response, then the end of the connection
    theirs.sendall(b"SASL_AUTHENTICATION_FAILED")
    theirs.close()
    transport.resume_reading()
    for _ in range(50):
        if len(protocol.events) >= 2:
            break
        net.poll(timeout_ms=100)
    net.close()
    assert protocol.events == [b"SASL_AUTHENTICATION_FAILED", "KafkaConnectionError"]
