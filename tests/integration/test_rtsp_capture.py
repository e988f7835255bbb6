"""`imgstream capture` of RTSP streams from GStreamer's RTSP server (Debian's packages).

The server asks for a login: one camera has the right password (from the
environment), one a wrong one. The password holds ``/ # ? @ % :`` and
non-ASCII: imgstream percent-encodes it into the URL and FFmpeg decodes it
back for the login. The server is killed for 4 s mid-capture and started
again on the same port.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

from imgstream.metrics import camera_health
from tests.fixtures.deploy import scrape
from tests.helpers import wait_until
from tests.integration.test_live_capture import metrics_url, stored, ts_of

PASSWORD = "Rtsp/Se#cret?9917@%:ü"


def test_rtsp_cameras_with_a_login_an_outage_and_a_wrong_password(
    topics, background, rtsp_server, tmp_path
) -> None:
    server = rtsp_server(login=f"viewer:{PASSWORD}")
    yard = server.url.replace("rtsp://", "rtsp://viewer:${YARD_PASSWORD}@")
    wrong = server.url.replace("rtsp://", "rtsp://viewer:not-${YARD_PASSWORD}@")
    cameras = tmp_path / "cameras.toml"
    cameras.write_text(
        f'[defaults]\nfps = 2\n\n[[camera]]\nname = "yard"\nurl = "{yard}"\n\n'
        f'[[camera]]\nname = "wrong"\nurl = "{wrong}"\n'
    )
    store = tmp_path / "frames"
    capture = background(
        *("capture", "--cameras", str(cameras), "--store", str(store)),
        *("--bootstrap", topics.bootstrap, "--topic", topics.refs, "--duration", "30"),
        *("--open-timeout", "3", "--read-timeout", "2", "--metrics-port", "0"),
        name="capture",
        env={"YARD_PASSWORD": PASSWORD},
    )
    url = metrics_url(capture)
    wait_until(lambda: len(stored(store, "yard")) >= 4, 60, what="frames before the outage")
    server.kill()
    killed_ms = time.time() * 1000
    time.sleep(4)
    server.start()
    restarted_ms = time.time() * 1000
    wait_until(
        lambda: sum(ts_of(f) > restarted_ms for f in stored(store, "yard")) >= 2,
        60,
        what="frames after the outage",
    )
    health = camera_health(scrape(url))
    exposition = scrape(url)
    assert capture.wait(90) == 0, capture.output()
    log = capture.output()
    frames = stored(store, "yard")
    after = [f for f in frames if ts_of(f) > restarted_ms]
    print(f"\nRTSP frames back {(ts_of(after[0]) - restarted_ms) / 1000:.2f}s after the restart")
    assert any(ts_of(f) < killed_ms for f in frames) and after
    assert health["yard"]["connected"] == 1 and health["yard"]["reconnects"] >= 1
    assert health["yard"]["outages"] == 1
    assert health["wrong"]["connected"] == 0 and health["wrong"]["stored"] == 0
    assert "camera wrong: cannot open rtsp://viewer:***@" in log and "RTSP 401" in log
    assert re.search(r"camera yard: frames are back after a \d+\.\ds gap", log), log
    refs = topics.read_refs()
    assert sorted(r.id for r in refs) == sorted(f"yard-{f.stem}" for f in frames)
    for secret in (PASSWORD, quote(PASSWORD, safe=""), "Rtsp/Se", "cret?9917"):
        assert not [t for t in (log, exposition, repr(refs)) if secret in t], secret
