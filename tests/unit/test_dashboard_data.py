"""The dashboard's data endpoints over a real store: the JSON equals what the store holds."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgstream.dashboard.app import Dashboard
from imgstream.dashboard.db import check_store, connect_readonly
from imgstream.dashboard.media import MediaResolver, Roots
from imgstream.dashboard.scrape import Scraper, parse_exposition
from imgstream.errors import ConfigError
from imgstream.store import SQLiteStore

NOW = 1_800_000_100_000
T0 = 1_800_000_000_000


def result(ref_id: str, out: Path, src: Path, **kw: object) -> dict:
    rec = {
        "v": 1,
        "kind": "result",
        "id": ref_id,
        "uri": str(src),
        "source": "cam",
        "output_uri": str(out),
        "pipeline": "faces",
        "pipeline_hash": "h1",
        "width": 40,
        "height": 20,
        "channels": 3,
        "bytes_in": 100,
        "outputs": {},
        "timings": {"ops": 0.01},
        "batch_id": "b",
        "worker": "w",
        "ts": T0,
        "latency_ms": 100,
        "lineage": {"topic": "refs", "partition": 0, "offset": 0, "sha256": None, "versions": {}},
    }
    rec.update(kw)
    return rec


def failure(ref_id: str, kind: str, uri: str = "x", **kw: object) -> dict:
    return {
        "v": 1,
        "kind": "failure",
        "id": ref_id,
        "uri": uri,
        "source": "cam",
        "error": {"type": kind, "message": f"reason of {ref_id}"},
        "topic": "refs",
        "partition": 0,
        "offset": 1,
        "attempts": 1,
        "batch_id": "b",
        "worker": "w",
        "ts": T0 + 500,
        **kw,
    }


def image(path: Path, h: int = 20, w: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))
    return path


@pytest.fixture
def site(tmp_path: Path) -> dict:
    """A store beside its outputs (as `imgstream run` leaves it), inputs in another folder."""
    out, inp = tmp_path / "out", tmp_path / "in"
    records = []
    for i, lat in enumerate([100, 200, 300, 400]):
        src = image(inp / f"a{i}.png")
        dst = image(out / "h1" / "cam" / f"a{i}.png")
        outputs = {"faces": {"count": 1, "boxes": [[1, 2, 3, 4]]}} if i == 0 else {}
        if i == 1:
            outputs = {
                "qr": {"found": True, "text": "x", "points": [[1, 1], [5, 1], [5, 6], [1, 6]]}
            }
        records.append(result(f"a{i}", dst, src, ts=T0 + i * 1000, latency_ms=lat, outputs=outputs))
    records.append(failure("bad1", "decode_error", "<script>alert(1)</script>.jpg"))
    records.append(failure("bad2", "not_found"))
    records.append(failure("bad3", "not_found"))
    # a tiled parent with 1 of 4 tiles, and one fused from its 2 tiles
    for parent, n, total in (("big", 1, (2, 2)), ("fused", 2, (1, 2))):
        for c in range(n):
            tile = {"parent": parent, "row": 0, "col": c, "rows": total[0], "cols": total[1]}
            dst = image(out / "h1" / "cam" / f"{parent}-t{c}.png")
            records.append(result(f"{parent}-t{c}", dst, dst, tile=tile))
    records.append(result("fused", image(out / "h1" / "cam" / "fused.png"), inp / "nope.png"))
    db = out / "results.db"
    store = SQLiteStore(str(db))
    assert store.add_many(records) == len(records)
    store.close()
    dash = Dashboard(str(db), MediaResolver(Roots.for_store(str(db), [str(inp)])), lambda: NOW)
    return {"dash": dash, "db": db, "out": out, "in": inp}


def get(dash: Dashboard, target: str) -> object:
    resp = dash.handle(target)
    assert resp.status == 200, (target, resp.body)
    assert resp.content_type == "application/json"
    return json.loads(resp.body)


def test_totals_equal_the_stores_accumulators(site) -> None:
    totals = get(site["dash"], "/api/totals")
    store = SQLiteStore(str(site["db"]))
    acc = store.summary()["cam"]
    store.close()
    assert totals["ok"] == acc.ok == 5  # four images and one fused parent; tiles count through it
    assert totals["failures"] == dict(acc.failures) == {"decode_error": 1, "not_found": 2}
    assert totals["failed"] == 3 and totals["refs"] == 8
    assert totals["pixels"] == acc.pixels
    assert totals["latency_p50_ms"] == 200.0  # nearest rank over 100,100,200,300,400
    assert totals["latency_p99_ms"] == 400.0
    # first capture at T0, last done at T0 + 3 s + 400 ms
    assert totals["images_per_s_run"] == pytest.approx(8 / 3.4, abs=1e-3)


def test_series_are_per_minute_from_the_accumulators(site) -> None:
    (point,) = get(site["dash"], "/api/series")
    assert point["t"] == (T0 - T0 % 60_000) // 1000
    assert point["ok"] == 5 and point["failed"] == 3
    assert point["images_per_s"] == pytest.approx(8 / 60, abs=1e-3)
    assert point["mean_latency_ms"] == pytest.approx((100 + 200 + 300 + 400 + 100) / 5)


def test_sources_list_the_newest_results_with_their_boxes(site) -> None:
    (src,) = get(site["dash"], "/api/sources")
    assert src["source"] == "cam" and src["ok"] == 5 and src["failed"] == 3
    ids = [i["id"] for i in src["latest"]]
    # newest capture first; the fused parent (ts T0, stored after a0) before a0
    assert ids == ["a3", "a2", "a1", "fused", "a0"]  # tiles are shown with their parent
    boxes = {i["id"]: i["boxes"] for i in src["latest"]}
    assert boxes["a0"] == [{"kind": "faces", "x": 1, "y": 2, "w": 3, "h": 4}]
    assert boxes["a1"] == [{"kind": "qr", "x": 1, "y": 1, "w": 4, "h": 5}]


def test_state_says_which_images_can_be_shown(site) -> None:
    state = get(site["dash"], "/api/state")
    items = {i["id"]: i for i in state["sources"][0]["latest"]}
    assert items["a0"]["has_in"] and items["a0"]["has_out"]
    assert not items["fused"]["has_in"]  # its input does not exist
    assert state["version"] > 0 and state["metrics"] is None


def test_failures_are_newest_first_and_filter_by_type(site) -> None:
    everything = get(site["dash"], "/api/failures")
    assert everything["types"] == {"decode_error": 1, "not_found": 2}
    assert [f["id"] for f in everything["latest"]] == ["bad3", "bad2", "bad1"]
    assert everything["latest"][2]["uri"] == "<script>alert(1)</script>.jpg"
    only = get(site["dash"], "/api/failures?type=not_found")
    assert [f["type"] for f in only["latest"]] == ["not_found", "not_found"]
    state = get(site["dash"], "/api/state?failure_type=decode_error")
    assert [f["id"] for f in state["failures"]["latest"]] == ["bad1"]


def test_tiled_parents_show_completion_and_the_fused_result(site) -> None:
    tiles = {t["parent"]: t for t in get(site["dash"], "/api/tiles")}
    assert (tiles["big"]["done"], tiles["big"]["total"], tiles["big"]["fused"]) == (1, 4, None)
    assert (tiles["fused"]["done"], tiles["fused"]["total"]) == (2, 2)
    assert tiles["fused"]["fused"]["id"] == "fused"


def test_record_endpoint_and_image_page(site) -> None:
    found = get(site["dash"], "/api/record?id=a0")
    assert found["record"]["id"] == "a0" and found["p"] == "h1"
    assert found["item"]["has_out"]
    parent = get(site["dash"], "/api/record?id=fused&p=h1")
    assert [t["id"] for t in parent["tiles"]] == ["fused-t0", "fused-t1"]
    assert site["dash"].handle("/api/record?id=nope").status == 404
    page = site["dash"].handle("/image/a0")
    assert page.status == 200 and b"image.js" in page.body
    assert site["dash"].handle("/image/bad1").status == 200  # failures have pages too


def test_a_thumbnail_is_a_bounded_jpeg(site, tmp_path: Path) -> None:
    store = SQLiteStore(str(site["db"]))
    big = image(site["out"] / "h1" / "cam" / "huge.png", h=300, w=3000)
    store.add(result("huge", big, big, width=3000, height=300))
    store.close()
    for w, want in (("100", 160), ("320", 320), ("99999", 1280)):
        resp = site["dash"].handle(f"/media?side=out&id=huge&p=h1&w={w}")
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        img = cv2.imdecode(np.frombuffer(resp.body, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape[1] == want
    cache = site["dash"].thumbs
    assert len(cache) == 3 and cache.misses == 3
    site["dash"].handle("/media?side=out&id=huge&p=h1&w=300")
    assert cache.hits == 1


def test_the_thumbnail_cache_is_bounded(site) -> None:
    dash = site["dash"]
    dash.thumbs.max_bytes = 1500
    for i in range(4):
        for w in (160, 320, 640):
            assert dash.handle(f"/media?side=in&id=a{i}&p=h1&w={w}").status == 200
    assert dash.thumbs.size_bytes <= 1500
    assert 0 < len(dash.thumbs) < 12


def test_the_store_is_opened_read_only(site) -> None:
    before = site["db"].stat().st_mtime_ns
    site["dash"].state()
    db = connect_readonly(str(site["db"]))
    with pytest.raises(sqlite3.OperationalError):
        db.execute("DELETE FROM records")
    db.close()
    assert site["db"].stat().st_mtime_ns == before


def test_a_missing_or_foreign_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        check_store(str(tmp_path / "nope.db"))
    assert not (tmp_path / "nope.db").exists()  # never created
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ConfigError, match="not an imgstream result store"):
        check_store(str(other))
    text = tmp_path / "text.db"
    text.write_text("hello, not sqlite" * 100)
    with pytest.raises(ConfigError, match="not an imgstream result store"):
        check_store(str(text))


EXPOSITION = """# HELP imgstream_images_total Images.
# TYPE imgstream_images_total counter
imgstream_images_total{status="ok"} %d
imgstream_images_total{status="failed"} 1
imgstream_end_to_end_latency_seconds_sum %f
imgstream_end_to_end_latency_seconds_count %d
imgstream_consumer_lag_messages{partition="0",topic="imgstream.refs"} %d
imgstream_consumer_lag_messages{partition="1",topic="imgstream.refs"} 3
"""


def test_scrapes_become_rates_and_lag_per_partition() -> None:
    now = [100.0]
    pages = iter([EXPOSITION % (10, 1.0, 10, 7), EXPOSITION % (30, 5.0, 30, 2), OSError("refused")])
    scraper = Scraper(["http://127.0.0.1:9/"], lambda: now[0], get=lambda url: next(pages))
    assert scraper.urls == ["http://127.0.0.1:9/metrics"]
    scraper.scrape_once()
    now[0] += 2.0
    scraper.scrape_once()
    state = scraper.state()
    (point,) = state["series"]
    assert point["images_per_s"] == pytest.approx(10.0)
    assert point["mean_latency_ms"] == pytest.approx(200.0)
    assert state["lag"] == {"imgstream.refs/0": 2.0, "imgstream.refs/1": 3.0}
    now[0] += 2.0
    scraper.scrape_once()
    assert scraper.state()["errors"] == ["refused"]
    samples = parse_exposition('x_total{a="b\\"c",d="e"} 4\n# comment\nbroken line\n')
    assert samples == {"x_total": {(("a", 'b\\"c'), ("d", "e")): 4.0}}


def test_the_pages_never_parse_strings_as_html() -> None:
    static = Path(__file__).parents[2] / "stream" / "dashboard" / "static"
    ours = [p for p in static.glob("*.js") if not p.name.startswith("uPlot")]
    assert len(ours) >= 3
    for path in ours:
        text = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, (path.name, sink)
    assert os.path.getsize(static / "uPlot.iife.min.js") < 100_000


def test_the_tail_reads_only_new_records_and_notices_a_new_store(tmp_path: Path) -> None:
    from imgstream.dashboard.tail import Tail

    db_path = tmp_path / "r.db"
    store = SQLiteStore(str(db_path))
    out = image(tmp_path / "o.png")
    store.add_many([result(f"a{i}", out, out, latency_ms=i) for i in range(5)])
    tail = Tail(keep=3)
    db = connect_readonly(str(db_path))
    assert [e.latency_ms for e in tail.read(db)] == [2, 3, 4]
    store.add_many([result("b", out, out, latency_ms=9), failure("f", "not_found")])
    assert [(e.kind, e.latency_ms) for e in tail.read(db)] == [
        ("result", 4),
        ("result", 9),
        ("failure", None),
    ]
    store.close()
    db.close()
    db_path.unlink()
    store = SQLiteStore(str(db_path))
    store.add(result("c", out, out, latency_ms=7))
    store.close()
    db = connect_readonly(str(db_path))
    assert [e.latency_ms for e in tail.read(db)] == [7]
    db.close()


def test_state_follows_the_store_as_it_grows(site) -> None:
    dash = site["dash"]
    first = dash.state()
    assert dash.state() is first  # unchanged store: the same answer is reused
    store = SQLiteStore(str(site["db"]))
    out = site["out"] / "h1" / "cam" / "a0.png"
    store.add(result("new", out, out, ts=T0 + 9000, latency_ms=1000))
    store.close()
    second = dash.state()
    assert second["version"] > first["version"]
    assert second["totals"]["ok"] == first["totals"]["ok"] + 1
    assert second["sources"][0]["latest"][0]["id"] == "new"


# --- the cameras panel: capture /metrics and motion from the store ---------------------


def capture_exposition(stored: int, connected: bool = True) -> str:
    """A capture's /metrics: gate (connected or not) and door, as CameraMetrics writes them."""
    from imgstream.metrics import CameraMetrics

    metrics = CameraMetrics()
    gate = metrics.camera("gate", lambda: 10.0)
    if connected:
        gate.connected(320, 240)
    for _ in range(stored):
        gate.frame("stored")
    gate.frame("dropped")
    metrics.camera("door", lambda: 0.0).disconnected("refused")
    return metrics.exposition().decode()


def test_scrapes_of_a_capture_give_each_cameras_health() -> None:
    now = [100.0]
    pages = iter([capture_exposition(4), capture_exposition(14), OSError("refused")])
    scraper = Scraper(["http://127.0.0.1:9/"], lambda: now[0], get=lambda url: next(pages))
    scraper.scrape_once()
    assert [c["fps"] for c in scraper.state()["cameras"]] == [None, None]  # one scrape: no rate
    now[0] += 2.0
    scraper.scrape_once()
    door, gate = scraper.state()["cameras"]
    assert gate == {
        "camera": "gate", "connected": True, "fps": 5.0, "last_frame_age_s": 0.0,
        "dropped": 1.0, "reconnects": 0.0,
    }  # fmt: skip
    assert door["connected"] is False and door["fps"] == 0.0 and door["dropped"] == 0.0
    now[0] += 2.0
    scraper.scrape_once()  # the capture is gone: nothing is known of its cameras
    assert scraper.state()["cameras"] == []


def test_motion_is_read_incrementally_per_source(tmp_path: Path) -> None:
    from imgstream.dashboard.cameras import MotionTail

    db_path = tmp_path / "r.db"
    store = SQLiteStore(str(db_path))
    out = image(tmp_path / "o.png")

    def frame(i: int, source: str, ratio: float | None) -> dict:
        outputs = {} if ratio is None else {"motion": {"ratio": ratio, "boxes": []}}
        return result(f"{source}{i}", out, out, source=source, ts=T0 + i * 1000, outputs=outputs)

    store.add_many([frame(i, "gate", i / 10) for i in range(4)] + [frame(0, "door", None)])
    tail = MotionTail(keep=3)
    db = connect_readonly(str(db_path))
    assert tail.read(db) == {"gate": [(T0 + 1000, 0.1), (T0 + 2000, 0.2), (T0 + 3000, 0.3)]}
    store.add_many([frame(4, "gate", 0.5), frame(1, "lobby", 0.05)])
    motion = tail.read(db)
    assert motion["gate"][-1] == (T0 + 4000, 0.5) and len(motion["gate"]) == 3
    assert motion["lobby"] == [(T0 + 1000, 0.05)]
    # frames with one timestamp (files of one run) keep their order, not their ratios'
    store.add_many([frame(1, "same", r) | {"id": f"same-{r}"} for r in (0.3, 0.1, 0.2)])
    assert [r for _, r in tail.read(db)["same"]] == [0.3, 0.1, 0.2]
    store.close()
    db.close()


def test_the_cameras_panel_joins_metrics_and_motion() -> None:
    from imgstream.dashboard.cameras import panel

    health = [
        {"camera": "gate", "connected": True, "fps": 5.0, "last_frame_age_s": 0.2, "dropped": 3},
        {"camera": "yard", "connected": False, "fps": 0.0, "last_frame_age_s": 40.0},
    ]
    motion = {"gate": [(T0, 0.0), (T0 + 500, 0.25)], "lobby": [(T0, 0.5)]}
    gate, lobby, yard = panel(health, motion)
    assert gate["motion"] == [[T0 / 1000, 0.0], [T0 / 1000 + 0.5, 0.25]]
    assert gate["motion_now"] == 0.25 and gate["dropped"] == 3 and gate["connected"] is True
    assert lobby["connected"] is None and lobby["fps"] is None and lobby["motion_now"] == 0.5
    assert yard["motion"] == [] and yard["motion_now"] is None and yard["dropped"] is None


def test_state_has_a_cameras_panel(site) -> None:
    dash = site["dash"]
    assert dash.state()["cameras"] == []  # no capture scraped, no motion in the store
    store = SQLiteStore(str(site["db"]))
    out = site["out"] / "h1" / "cam" / "a0.png"
    moving = {"motion": {"ratio": 0.125, "boxes": [[1, 2, 3, 4]], "scale": 2.0}}
    store.add(result("moving", out, out, ts=T0 + 9000, outputs=moving))
    store.close()
    state = dash.state()
    (cam,) = state["cameras"]
    assert cam["camera"] == "cam" and cam["motion_now"] == 0.125 and cam["connected"] is None
    # its boxes are drawn over the thumbnail, scaled from the analysed frame to the image
    (box,) = state["sources"][0]["latest"][0]["boxes"]
    assert box == {"kind": "motion", "x": 2.0, "y": 4.0, "w": 6.0, "h": 8.0}
    answer = json.loads(dash.handle("/api/cameras").body)
    assert answer == [cam]
