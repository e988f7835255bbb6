"""The dashboard's HTTP server holds a bounded number of connections, and none forever.

Real sockets on loopback (the server's thread per connection is what is
measured); the waits are on sockets with deadlines, never sleeps.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from imgstream.dashboard.app import Response
from imgstream.dashboard.server import DashboardServer


class _Page:
    """A stand-in Dashboard: every path answers ``ok``."""

    def handle(self, path: str) -> Response:
        return Response(200, "text/plain; charset=utf-8", b"ok\n")


def _serve(**kw: Any) -> Iterator[DashboardServer]:
    server = DashboardServer("127.0.0.1", 0, _Page(), **kw)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def capped() -> Iterator[DashboardServer]:
    yield from _serve(max_connections=4, timeout_s=30.0)


@pytest.fixture
def quick() -> Iterator[DashboardServer]:
    yield from _serve(timeout_s=0.5)


def _get(server: DashboardServer, timeout: float = 10.0) -> tuple[int, bytes]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=timeout)
    try:
        conn.request("GET", "/api/state", headers={"Host": f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _handler_threads() -> int:
    return threading.active_count()  # the server's are the only ones that come and go


def test_idle_connections_hold_a_bounded_number_of_threads(capped: DashboardServer) -> None:
    before = _handler_threads()
    idle = [socket.create_connection(capped.server_address[:2]) for _ in range(30)]
    try:
        # answered at once, though 30 connections sit idle (an idle one gives up its slot)
        started = time.monotonic()
        assert _get(capped) == (200, b"ok\n")
        assert time.monotonic() - started < 5.0
        # the server accepted the 30 before this request: they were all seen by now
        assert _handler_threads() - before <= 4
        assert _get(capped) == (200, b"ok\n")
    finally:
        for s in idle:
            s.close()


def test_an_idle_connection_is_closed_after_the_timeout(quick: DashboardServer) -> None:
    with socket.create_connection(quick.server_address[:2]) as silent:
        silent.settimeout(5.0)
        started = time.monotonic()
        assert silent.recv(1) == b""  # closed by the server, not by our 5 s
        assert 0.3 < time.monotonic() - started < 5.0


def test_a_kept_alive_connection_is_closed_once_it_idles(quick: DashboardServer) -> None:
    host, port = quick.server_address[:2]
    with socket.create_connection((host, port)) as conn:
        conn.settimeout(5.0)
        conn.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        got = b""
        while not got.endswith(b"ok\n"):
            chunk = conn.recv(4096)
            assert chunk, got
            got += chunk
        assert got.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert conn.recv(1) == b""
        assert time.monotonic() - started < 5.0
