"""``imgstream dashboard`` as a user runs it: its first line, its errors, raw HTTP requests."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from imgstream.store import SQLiteStore
from tests.unit.test_dashboard_data import failure, image, result

START_S = 60.0


@pytest.fixture
def store(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    good = image(out / "h1" / "cam" / "a.png")
    db = out / "results.db"
    s = SQLiteStore(str(db))
    s.add_many([result("a", good, good), failure("bad", "decode_error", "<script>x</script>")])
    s.close()
    return db


@pytest.fixture
def served(background, store: Path) -> Iterator[tuple[str, int, object]]:
    proc = background("dashboard", "--db", str(store), "--port", "0", name="dashboard")
    proc.wait_for_output("\n", START_S)
    url = proc.output().splitlines()[0]
    parts = urlsplit(url)
    assert url == f"http://127.0.0.1:{parts.port}/"
    yield "127.0.0.1", int(parts.port or 0), proc


def raw_get(host: str, port: int, target: str, headers: dict[str, str] | None = None):
    """A GET with the request target sent exactly as given (no client-side normalising)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.putrequest("GET", target, skip_host=headers is not None and "Host" in headers)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_prints_its_url_first_and_serves_the_store(served) -> None:
    host, port, _ = served
    status, headers, body = raw_get(host, port, "/api/totals")
    assert status == 200
    totals = json.loads(body)
    assert (totals["ok"], totals["failed"], totals["failures"]) == (1, 1, {"decode_error": 1})
    status, headers, body = raw_get(host, port, "/")
    assert status == 200 and b"/static/app.js" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "target",
    [
        "/image/../../etc/passwd",
        "/image/..%2f..%2fetc%2fpasswd",
        "/../../../../etc/passwd",
        "//etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "http://127.0.0.1/etc/passwd",
        "/media?side=out&id=../../etc/passwd",
    ],
)
def test_raw_paths_get_404(served, target: str) -> None:
    host, port, _ = served
    status, _, body = raw_get(host, port, target)
    assert status == 404
    assert b"root:" not in body


def test_other_hosts_and_methods_are_refused(served) -> None:
    host, port, _ = served
    assert raw_get(host, port, "/", {"Host": "evil.example:80"})[0] == 403
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("POST", "/api/state", body=b"{}")
    assert conn.getresponse().status == 501
    conn.close()


def test_sigterm_stops_it_cleanly(served) -> None:
    _, _, proc = served
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_a_missing_or_foreign_store_is_one_line_and_exit_2(run_cli, tmp_path: Path) -> None:
    missing = run_cli("dashboard", "--db", str(tmp_path / "nope.db"), "--port", "0")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: --db {tmp_path / 'nope.db'}: no such file"
    ]
    assert not (tmp_path / "nope.db").exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    foreign = run_cli("dashboard", "--db", str(other), "--port", "0")
    assert foreign.returncode == 2
    (line,) = foreign.stderr.strip().splitlines()
    assert line.startswith(f"error: --db {other}: not an imgstream result store")
    assert "Traceback" not in foreign.stderr and foreign.stdout == ""


def test_a_port_in_use_is_one_line(run_cli, store: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_cli("dashboard", "--db", str(store), "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --port {port}: address 127.0.0.1:{port} is in use"
    ]


def test_a_metrics_url_that_is_not_http_is_one_line_and_exit_2(run_cli, store: Path) -> None:
    done = run_cli(
        "dashboard", "--db", str(store), "--port", "0", "--metrics", "file:///etc/passwd"
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --metrics file:///etc/passwd: not an http(s) URL"
    ]
