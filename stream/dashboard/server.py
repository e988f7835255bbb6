"""The dashboard's HTTP server: the standard library's ThreadingHTTPServer around Dashboard.

Why no web framework: the server answers a dozen GET routes with JSON, a few
static files and thumbnails, for a handful of viewers; ``http.server`` does
that with no dependency to keep up to date. Every answer carries a strict
Content-Security-Policy (the page runs only its own scripts) and ``nosniff``.
When bound to loopback, requests whose ``Host`` is not a loopback name are
refused (a web page elsewhere cannot reach the dashboard by DNS rebinding).

Each connection holds a thread, so connections are bounded: at most
``max_connections`` at once, and a connection that sends nothing for
``timeout_s`` (an idle keep-alive, a slow or silent client) is closed. When
every slot is taken, a new connection takes the slot of the connection that
has idled longest (it is closed, as a keep-alive connection may be at any
time); only when none idles does it wait, at most ``timeout_s``, and is then
refused.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from imgstream.dashboard.app import CSP, Dashboard, Response, not_found
from imgstream.errors import ConfigError

log = logging.getLogger("imgstream.dashboard")

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")

#: Connections served at once, one thread each (a browser opens up to six per host).
MAX_CONNECTIONS = 32
#: A connection that sends nothing for this long is closed (the page polls every 2 s).
TIMEOUT_S = 15.0


def _host_name(host_header: str) -> str:
    """The name part of a Host header (``[::1]:80`` -> ``[::1]``)."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if ":" in host_header else host_header


class DashboardServer(ThreadingHTTPServer):
    """One thread per connection, bounded; the Dashboard is shared (it is read-only).

    Ownership: ``_idle`` (connections waiting for their next request, oldest
    first) is shared by the handler threads and the accept thread, under
    ``_idle_lock``; ``_slots`` counts the connection threads.
    """

    daemon_threads = True
    allow_reuse_address = True
    #: Connections the kernel queues until they are accepted (socketserver's 5 drops a
    #: burst of a page's requests, which the browser then sends again a second later).
    request_queue_size = 64

    def __init__(
        self,
        host: str,
        port: int,
        dashboard: Dashboard,
        max_connections: int = MAX_CONNECTIONS,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.dashboard = dashboard
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._idle_lock = threading.Lock()
        self._idle: dict[socket.socket, None] = {}
        self.loopback_only = host in ("127.0.0.1", "localhost", "::1")
        if ":" in host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host, port), Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"--port {port}: address {host}:{port} is in use") from None
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(
                exc, socket.gaierror
            ):
                raise ConfigError(f"--host {host}: cannot listen there ({exc})") from None
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection on its own thread once it has a slot (accept thread)."""
        if not self._slots.acquire(blocking=False):
            self._evict_idlest()
            if not self._slots.acquire(timeout=self.timeout_s):  # every one busy
                log.debug("refused %s: every connection is busy", client_address)
                self.shutdown_request(request)
                return
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="dashboard-connection",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            self._slots.release()
            self.shutdown_request(request)
            raise

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _evict_idlest(self) -> None:
        """Close the connection that has waited longest for a request: its thread ends."""
        with self._idle_lock:
            if not self._idle:
                return
            victim = next(iter(self._idle))
            del self._idle[victim]
        with contextlib.suppress(OSError):
            victim.shutdown(socket.SHUT_RDWR)

    def idle(self, conn: socket.socket) -> None:
        """``conn`` waits for its next request: it may give up its slot."""
        with self._idle_lock:
            self._idle[conn] = None

    def busy(self, conn: socket.socket) -> bool:
        """``conn`` has a request: it keeps its slot. False if it was evicted meanwhile."""
        with self._idle_lock:
            return self._idle.pop(conn, False) is None

    @property
    def url(self) -> str:
        """The page's URL."""
        host, port = str(self.server_address[0]), int(self.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"


class Handler(BaseHTTPRequestHandler):
    """GET and HEAD only; everything goes through Dashboard.handle."""

    server: DashboardServer
    server_version = "imgstream-dashboard"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        """Set the socket timeout: reads and writes that stall past it close the connection."""
        self.request.settimeout(self.server.timeout_s)
        super().setup()

    def handle(self) -> None:
        """Answer the connection's requests until it closes, idles out or is evicted."""
        self.close_connection = True
        while self._next_request():
            self.handle_one_request()
            if self.close_connection:
                return

    def _next_request(self) -> bool:
        """Wait (evictable) for the first byte of the next request; False: close."""
        self.server.idle(self.request)
        try:
            # rfile is buffered (rbufsize -1): peek waits for a byte and consumes none
            arrived = bool(cast(io.BufferedReader, self.rfile).peek(1))
        except OSError:  # the timeout (TimeoutError), or a reset
            arrived = False
        return self.server.busy(self.request) and arrived

    def do_GET(self) -> None:
        """Answer a GET."""
        self._answer(head=False)

    def do_HEAD(self) -> None:
        """Answer a HEAD."""
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        host = self.headers.get("Host", "")
        if self.server.loopback_only and _host_name(host) not in LOOPBACK_NAMES:
            resp = Response(403, "text/plain; charset=utf-8", b"forbidden host\n")
        else:
            try:
                resp = self.server.dashboard.handle(self.path)
            except Exception:  # a bug or a locked store: one 500, the server stays up
                log.exception("error answering %s", self.path[:200])
                resp = Response(500, "text/plain; charset=utf-8", b"internal error\n")
        if resp.status == 404 and not resp.body:
            resp = not_found()
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(resp.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to the debug log, not stderr."""
        log.debug("%s " + format, self.address_string(), *args)
