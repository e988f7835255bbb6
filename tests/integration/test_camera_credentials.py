"""`imgstream capture --cameras` with a password holding ``/ # ? @ % :`` and non-ASCII.

The password comes from the environment through ``${VAR}``. Once it went into
the URL as it was: the host ended at its ``/`` and the log said ``camera gate:
cannot open rtsp://viewer:s3/cr#t@10.0.0.5/stream1: ...``. Now it is
percent-encoded, and OpenCV's FFmpeg decodes it back: an HTTP camera behind a
Basic login (an MJPEG AVI served from this process) gives frames, and an RTSP
server sees the password itself in the login FFmpeg sends. No form of it
reaches the log, the refs or the metrics.
"""

from __future__ import annotations

import base64
import http.server
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import pytest

from tests.fixtures.deploy import scrape
from tests.integration.test_live_capture import metrics_url, stored

USER = "viewer"
PASSWORD = "s3/cr#t?@%:ü-Gate"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def http_camera(tmp_path: Path) -> Iterator[str]:
    """``http://127.0.0.1:PORT/live.avi``: an MJPEG clip behind a Basic login as USER/PASSWORD."""
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(40):
        writer.write(np.full((120, 160, 3), i * 6, np.uint8))
    writer.release()
    data = clip.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != _basic(USER, PASSWORD):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/x-msvideo")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/live.avi"
    server.shutdown()
    server.server_close()
    thread.join(5)


class RtspLogins:
    """An RTSP port that refuses every request (401, Basic) and keeps the logins sent."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        #: (User-Agent, decoded "user:password") of every request that sent a login.
        self.logins: list[tuple[str, str]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        buffer = b""
        with conn:
            try:
                while chunk := conn.recv(4096):
                    buffer += chunk
                    while b"\r\n\r\n" in buffer:
                        head, buffer = buffer.split(b"\r\n\r\n", 1)
                        fields = dict(
                            line.split(":", 1)
                            for line in head.decode("latin-1").split("\r\n")[1:]
                            if ":" in line
                        )
                        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
                        auth = fields.get("authorization", "")
                        if auth.startswith("Basic "):
                            login = base64.b64decode(auth[6:]).decode("utf-8", "replace")
                            self.logins.append((fields.get("user-agent", ""), login))
                        conn.sendall(
                            f"RTSP/1.0 401 Unauthorized\r\nCSeq: {fields.get('cseq', '1')}\r\n"
                            'WWW-Authenticate: Basic realm="camera"\r\n\r\n'.encode()
                        )
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def rtsp_logins() -> Iterator[RtspLogins]:
    server = RtspLogins()
    yield server
    server.close()


def test_a_password_with_url_characters_logs_in_and_is_shown_nowhere(
    topics, background, http_camera, rtsp_logins, tmp_path
) -> None:
    gate = http_camera.replace("http://", f"http://{USER}:${{GATE_PASSWORD}}@")
    wrong = http_camera.replace("http://", f"http://{USER}:not-${{GATE_PASSWORD}}@")
    door = f"rtsp://{USER}:${{GATE_PASSWORD}}@127.0.0.1:{rtsp_logins.port}/stream1"
    cameras = tmp_path / "cameras.toml"
    cameras.write_text(
        "[defaults]\nfps = 5\n\n"
        f'[[camera]]\nname = "gate"\nurl = "{gate}"\n\n'
        f'[[camera]]\nname = "wrong"\nurl = "{wrong}"\n\n'
        f'[[camera]]\nname = "door"\nurl = "{door}"\n'
    )
    store = tmp_path / "frames"
    capture = background(
        *("-v", "capture", "--cameras", str(cameras), "--store", str(store)),
        *("--bootstrap", topics.bootstrap, "--topic", topics.refs, "--duration", "8"),
        *("--open-timeout", "2", "--read-timeout", "2", "--metrics-port", "0"),
        name="capture",
        env={"GATE_PASSWORD": PASSWORD},
    )
    exposition = scrape(metrics_url(capture))
    assert capture.wait(60) == 0, capture.output()
    log = capture.output()
    frames = stored(store, "gate")
    assert frames, log  # the encoded password logged in: FFmpeg decoded it
    port = http_camera.split(":")[2].split("/")[0]
    assert f"camera wrong: cannot open http://{USER}:***@127.0.0.1:{port}/live.avi: HTTP 401" in log
    assert (
        f"camera door: cannot open rtsp://{USER}:***@127.0.0.1:{rtsp_logins.port}/stream1: RTSP 401"
        in log
    ), log
    ffmpeg_logins = {login for agent, login in rtsp_logins.logins if agent.startswith("Lavf")}
    assert ffmpeg_logins == {f"{USER}:{PASSWORD}"}, rtsp_logins.logins
    refs = topics.read_refs()
    assert sorted(r.id for r in refs) == sorted(f"gate-{f.stem}" for f in frames)
    pieces = [PASSWORD, quote(PASSWORD, safe=""), "s3/cr", "cr#t", "s3%2F"]
    for where, text in (("log", log), ("metrics", exposition), ("refs", repr(refs))):
        shown = [p for p in pieces if p in text]
        assert not shown, f"{shown} in the {where}: " + "; ".join(
            re.findall(r".{0,60}(?:s3/cr|s3%2F).{0,20}", text)
        )
