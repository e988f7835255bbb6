"""The dashboard in a real headless Chromium over a real ``imgstream run``.

The run processes the sample photos (the astronaut has a face) with
``faces:action=draw`` plus broken files, one of them named like an HTML tag.
The page must show the store's totals, thumbnails that load, the failures
with their types, names as text, no console error, and a live store's new
results within 5 s. The cameras panel joins a capture's /metrics (served
from the test) with the motion ratios in a store. Screenshots are saved
under the test's tmp dir (their paths are printed).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imgstream.clock import SystemClock
from imgstream.consumers.aggregator import Aggregator
from imgstream.metrics import CameraMetrics
from imgstream.store import Query, SQLiteStore
from tests.helpers import PHOTOS, refs_for, wait_until

SCRIPT_NAME = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"
START_S = 60.0


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``imgstream run`` over photos and bad files; its OUT folder and input folder."""
    from tests.helpers import cli

    base = tmp_path_factory.mktemp("dashboard-run")
    inputs = base / "in"
    inputs.mkdir()
    for photo in PHOTOS.iterdir():
        shutil.copy(photo, inputs / photo.name)
    (inputs / "notes.txt").write_text("not an image\n")
    (inputs / f"{SCRIPT_NAME.replace('/', '_')}.jpg").write_bytes(b"garbage, not a JPEG\n")
    jpeg = (PHOTOS / "coffee.jpg").read_bytes()
    (inputs / "truncated.jpg").write_bytes(jpeg[:600])
    out = base / "out"
    done = cli("run", str(inputs), "--out", str(out), "--ops", "faces:action=draw", timeout=600)
    assert done.returncode == 0, done.stderr
    return {"out": out, "in": inputs, "db": out / "results.db"}


def store_counts(db: Path) -> tuple[int, dict[str, int]]:
    store = SQLiteStore(str(db))
    try:
        sums = store.summary()
    finally:
        store.close()
    ok = sum(a.ok for a in sums.values())
    failures: dict[str, int] = {}
    for a in sums.values():
        for t, n in a.failures.items():
            failures[t] = failures.get(t, 0) + n
    return ok, failures


def open_dashboard(background: Callable[..., Any], db: Path, *extra: str) -> str:
    proc = background("dashboard", "--db", str(db), "--port", "0", *extra, name="dashboard")
    proc.wait_for_output("\n", START_S)
    url = proc.output().splitlines()[0]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/")
    return str(url)


def shot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def wait_js(page: Any, expression: str, timeout_s: float = 30.0) -> float:
    """Poll a JavaScript expression until it is true; the seconds it took.

    (Playwright's wait_for_function evaluates strings with eval, which the
    page's Content-Security-Policy forbids, as it should.)
    """
    start = time.monotonic()
    while not page.evaluate(expression):
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not true after {timeout_s} s: {expression}")
        page.wait_for_timeout(50)
    return time.monotonic() - start


def wait_loaded(page: Any) -> None:
    wait_js(page, "document.body.dataset.version !== undefined")


def test_the_page_shows_the_runs_store(page, background, run_out, tmp_path: Path) -> None:
    ok, failures = store_counts(run_out["db"])
    assert ok == 6 and sum(failures.values()) == 3, failures
    url = open_dashboard(background, run_out["db"])
    started = time.monotonic()
    page.goto(url)
    wait_loaded(page)
    assert page.inner_text("#total-ok") == str(ok)
    assert page.inner_text("#total-failed") == str(sum(failures.values()))
    assert page.inner_text("#total-refs") == str(ok + sum(failures.values()))
    by_type = page.eval_on_selector_all("#total-failures li", "els => els.map(e => e.textContent)")
    assert sorted(by_type) == sorted(f"{t} {n}" for t, n in failures.items())
    # output thumbnails load (inputs need --root: a placeholder, not a broken image)
    wait_js(
        page,
        "[...document.querySelectorAll('#sources img.thumb-img')]"
        ".some(i => i.complete && i.naturalWidth > 0)",
    )
    assert page.locator("#sources .side-in .placeholder").count() == ok
    # the astronaut's face box is drawn over her output
    assert page.locator("#sources .side-out .box-faces").count() >= 1
    # failures with their types, filterable
    types = page.eval_on_selector_all(
        "#failures .failure-row .f-type", "els => els.map(e => e.textContent)"
    )
    assert sorted(types) == sorted(t for t, n in failures.items() for _ in range(n))
    page.select_option("#failure-type", "decode_error")
    wait_js(
        page,
        "[...document.querySelectorAll('#failures .failure-row .f-type')]"
        ".every(e => e.textContent === 'decode_error')",
    )
    assert page.locator("#failures .failure-row").count() == failures["decode_error"]
    page.select_option("#failure-type", "")
    wait_js(page, "document.querySelectorAll('#failures .failure-row').length === 3")
    # a file named like HTML is shown as its name, and nothing of it runs
    uris = page.eval_on_selector_all(
        "#failures .failure-row .uri", "els => els.map(e => e.textContent)"
    )
    assert any(SCRIPT_NAME.replace("/", "_") in u for u in uris), uris
    assert page.evaluate("window.__pwned === undefined")
    assert page.locator("main script, main img[src='x']").count() == 0
    print(f"page ready in {time.monotonic() - started:.2f} s")
    shot(page, tmp_path, "dashboard.png")
    assert page.console.errors == []


def test_the_image_page_shows_record_and_both_images(
    page, background, run_out, tmp_path: Path
) -> None:
    db = sqlite3.connect(run_out["db"])
    (ref_id,) = db.execute("SELECT id FROM records WHERE id LIKE 'astronaut%'").fetchone()
    db.close()
    url = open_dashboard(background, run_out["db"], "--root", str(run_out["in"]))
    page.goto(url)
    wait_loaded(page)
    page.click(f"a.card-img[href^='/image/{ref_id}']")
    page.wait_for_url(f"**/image/{ref_id}*")
    wait_js(page, "document.body.dataset.loaded === '1'")
    wait_js(
        page,
        "[...document.querySelectorAll('#images img')].length === 2 && [...document"
        ".querySelectorAll('#images img')].every(i => i.complete && i.naturalWidth > 0)",
    )
    assert page.locator("#images .box-faces").count() == 2  # over input and output
    summary = page.inner_text("#summary")
    assert "faces:action=draw" in summary and "astronaut.jpg" in summary
    assert {"decode", "ops", "encode"} <= set(page.inner_text("#timings").split())
    assert json.loads(page.inner_text("#lineage"))["topic"] == "imgstream.refs"
    shot(page, tmp_path, "image.png")
    assert page.console.errors == []


def test_the_page_updates_when_the_store_grows(page, background, run_out, tmp_path: Path) -> None:
    live = run_out["out"] / "live.db"  # beside the outputs, so they are still served
    src = sqlite3.connect(run_out["db"])
    dst = sqlite3.connect(live)
    src.backup(dst)
    src.close()
    dst.close()
    url = open_dashboard(background, live, "--root", str(run_out["in"]))
    page.goto(url)
    wait_loaded(page)
    ok_before = int(page.inner_text("#total-ok"))
    store = SQLiteStore(str(live))
    template = store.query(Query(kind="result"))[0]
    aggregator = Aggregator(store, None, "results", "dlq", SystemClock(), "test-aggregator")
    now = SystemClock().wall_ms()
    new = {**template, "id": "live-new-image", "ts": now - 50, "latency_ms": 50}
    written = time.monotonic()
    assert aggregator.handle_records([new]) == 1
    store.close()
    wait_js(page, f"document.getElementById('total-ok').textContent === '{ok_before + 1}'", 5.0)
    seen = time.monotonic() - written
    page.wait_for_selector("#sources a.card-img[href^='/image/live-new-image']", timeout=5_000)
    print(f"the page showed the new result {seen:.2f} s after it was stored")
    assert page.inner_text("#total-rate-now") != "0"
    shot(page, tmp_path, "live.png")
    assert page.console.errors == []


def test_live_beside_a_worker_and_the_aggregator(page, background, topics, tmp_path: Path) -> None:
    """A real worker and `imgstream aggregate` fill the store while the page is open."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix == ".jpg")
    for p in photos:
        shutil.copy(p, inputs / p.name)
    worker = topics.start_worker(
        tmp_path / "out", inputs, "--max-wait", "0.1", "--metrics-port", "0"
    )
    metrics = re.search(
        r"metrics on (http://\S+/metrics)", worker.wait_for_output("metrics on http://", START_S)
    )
    assert metrics
    db = tmp_path / "out" / "results.db"
    db.parent.mkdir(exist_ok=True)
    background(
        "aggregate",
        "--bootstrap",
        topics.bootstrap,
        "--group",
        topics.group + "-aggregate",
        "--results-topic",
        topics.results,
        "--dlq-topic",
        topics.dlq,
        "--db",
        str(db),
        name="aggregate",
    )
    wait_until(lambda: db.exists(), START_S, what="the aggregator's store")
    url = open_dashboard(
        background,
        db,
        "--root",
        str(inputs),
        "--root",
        str(tmp_path / "out"),
        "--metrics",
        metrics[1],
    )
    page.goto(url)
    wait_loaded(page)

    def stored() -> int:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
        finally:
            conn.close()

    for round_, batch in enumerate((photos[:2], photos[2:])):
        want = stored() + len(batch)
        topics.produce(refs_for([inputs / p.name for p in batch], source=f"cam{round_}"))
        wait_until(lambda n=want: stored() == n, 120, what="the aggregator")
        took = wait_js(page, f"document.getElementById('total-ok').textContent === '{want}'", 5.0)
        print(
            f"round {round_}: the page showed {want} results {took:.2f} s after the store had them"
        )
    # both sources' thumbnails, and the workers' lag per partition from /metrics
    wait_js(page, "document.querySelectorAll('#sources .source').length === 2")
    wait_js(
        page,
        "[...document.querySelectorAll('#sources img.thumb-img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= 2 * "
        f"{len(photos)}",
    )
    wait_js(page, "document.querySelectorAll('#lag .lag-row').length === 4")
    lag_rows = page.eval_on_selector_all(
        "#lag .lag-row td.mono", "els => els.map(e => e.textContent)"
    )
    assert sorted(lag_rows) == [f"{topics.refs}/{p}" for p in range(4)]
    assert page.locator("#metrics-section").is_visible()
    shot(page, tmp_path, "live-worker.png")
    assert page.console.errors == []


def test_the_cameras_panel(page, background, tmp_path: Path) -> None:
    """gate and door on a capture's /metrics (door disconnected); gate and lobby move."""
    from tests.unit.test_dashboard_data import result

    now_ms = int(time.time() * 1000)
    records = [
        result(
            f"{source}-{i}", tmp_path / "out.png", tmp_path / "in.png", source=source,
            ts=now_ms - 20_000 + i * 1000, outputs={"motion": {"ratio": ratio * i, "boxes": []}},
        )
        for source, ratio in (("gate", 0.01), ("lobby", 0.02))
        for i in range(1, 16)
    ]  # fmt: skip
    db = tmp_path / "results.db"
    store = SQLiteStore(str(db))
    assert store.add_many(records) == len(records)
    store.close()
    metrics = CameraMetrics()
    gate = metrics.camera("gate", time.monotonic)
    gate.connected(320, 240)
    gate.frame("dropped")
    metrics.camera("door", time.monotonic).disconnected("refused")
    stop = threading.Event()

    def frames() -> None:  # gate stores 5 frames a second
        while not stop.wait(0.2):
            gate.frame("stored")

    feeder = threading.Thread(target=frames, daemon=True)
    feeder.start()
    server, _thread = metrics.serve(0)
    try:
        url = open_dashboard(
            background, db, "--metrics", f"http://127.0.0.1:{server.server_port}/metrics"
        )
        page.goto(url)
        wait_loaded(page)
        wait_js(page, "document.querySelectorAll('#cameras .camera').length === 3")
        names = page.eval_on_selector_all(
            "#cameras .camera .cam-name", "els => els.map(e => e.textContent)"
        )
        assert names == ["door", "gate", "lobby"]

        def cell(camera: str, cls: str) -> str:
            return str(page.inner_text(f"#cameras .camera[data-camera='{camera}'] .{cls}"))

        took = wait_js(page, "document.querySelector(\"[data-camera='gate'] .cam-fps\")"
                       ".textContent !== '–'", 15)  # fmt: skip
        print(f"gate's frames/s shown {took:.1f}s after the page loaded (two scrapes)")
        assert 3.0 <= float(cell("gate", "cam-fps")) <= 7.0
        assert cell("gate", "cam-connected") == "connected"
        assert cell("gate", "cam-age").endswith(" s ago") and cell("gate", "cam-dropped") == "1"
        assert cell("gate", "cam-motion-now") == "0.15"
        assert cell("door", "cam-connected") == "disconnected"
        assert (cell("door", "cam-motion-now"), cell("door", "cam-dropped")) == ("–", "0")
        assert cell("lobby", "cam-connected") == "–" and cell("lobby", "cam-fps") == "–"
        # a motion chart where the store has motion, none where it has not
        for camera, charts in (("gate", 1), ("lobby", 1), ("door", 0)):
            sel = f"#cameras .camera[data-camera='{camera}'] .cam-motion:not([hidden]) canvas"
            assert page.locator(sel).count() == charts, camera
        # door leaves the cameras file: its card goes with its series
        metrics.forget("door")
        wait_js(page, "document.querySelectorAll('#cameras .camera').length === 2", 15)
        shot(page, tmp_path, "cameras.png")
        assert page.console.errors == []
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
