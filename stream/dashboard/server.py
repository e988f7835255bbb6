"""The dashboard's HTTP server: the standard library's ThreadingHTTPServer around Dashboard.

Why no web framework: the server answers a dozen GET routes with JSON, a few
static files and thumbnails, for a handful of viewers; ``http.server`` does
that with no dependency to keep up to date. Every answer carries a strict
Content-Security-Policy (the page runs only its own scripts) and ``nosniff``.
When bound to loopback, requests whose ``Host`` is not a loopback name are
refused (a web page elsewhere cannot reach the dashboard by DNS rebinding).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from imgstream.dashboard.app import CSP, Dashboard, Response, not_found
from imgstream.errors import ConfigError

log = logging.getLogger("imgstream.dashboard")

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def _host_name(host_header: str) -> str:
    """The name part of a Host header (``[::1]:80`` -> ``[::1]``)."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if ":" in host_header else host_header


class DashboardServer(ThreadingHTTPServer):
    """One thread per request; the Dashboard is shared (it is read-only)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
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
