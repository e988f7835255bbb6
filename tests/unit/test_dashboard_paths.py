"""What the dashboard may serve: only files some record names, inside the allowed roots.

Every refused request is a plain 404, whatever the reason (so the answer
does not reveal whether a path exists outside the roots).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgstream.dashboard.app import Dashboard
from imgstream.dashboard.media import MediaResolver, Roots
from imgstream.store import SQLiteStore
from tests.unit.test_dashboard_data import image, result


@pytest.fixture
def world(tmp_path: Path) -> dict:
    out, inp, outside = tmp_path / "out", tmp_path / "in", tmp_path / "secret"
    secret = image(outside / "secret.png")
    good_in = image(inp / "ok.png")
    good_out = image(out / "h1" / "ok.png")
    (out / "h1" / "link.png").symlink_to(secret)
    (inp / "link.png").symlink_to(secret)
    (out / "notes.txt").write_text("not an image\n")
    records = [
        result("ok", good_out, good_in),
        result("abs", Path("/etc/passwd"), Path("/etc/passwd")),
        result("outside", secret, secret),
        result(
            "dots", Path(f"{out}/h1/../../secret/secret.png"), Path("in/../../secret/secret.png")
        ),
        result("rel", Path("../secret/secret.png"), Path("../secret/secret.png")),
        result("links", out / "h1" / "link.png", inp / "link.png"),
        result("fileuri", Path(f"file://{secret}"), Path(f"file://{secret}")),
        result("text", out / "notes.txt", out / "notes.txt"),
        {
            **result("fail", good_out, good_in),
            "kind": "failure",
            "error": {"type": "x", "message": "m"},
        },
    ]
    db = out / "results.db"
    store = SQLiteStore(str(db))
    store.add_many(records)
    store.close()
    roots = Roots.for_store(str(db), [str(inp)])
    return {
        "dash": Dashboard(str(db), MediaResolver(roots), lambda: 0),
        "bare": Dashboard(str(db), MediaResolver(Roots.for_store(str(db), [])), lambda: 0),
        "secret": secret,
    }


@pytest.mark.parametrize(
    "target",
    [
        "/image/../../etc/passwd",
        "/image/%2e%2e/%2e%2e/etc/passwd",
        "/image//etc/passwd",
        "/image/%2Fetc%2Fpasswd",
        "/../../etc/passwd",
        "/etc/passwd",
        "/static/../app.py",
        "/static/%2e%2e%2fapp.py",
        "/static/..%2F..%2Fetc%2Fpasswd",
        "/static//etc/passwd",
        "/static/.hidden",
        "/media?path=/etc/passwd",
        "/media?side=out&id=/etc/passwd",
        "/media?side=../out&id=ok",
        "/api/../../etc/passwd",
        "/api/record?id=../../etc/passwd",
    ],
)
def test_paths_from_the_url_are_never_files(world, target: str) -> None:
    assert world["dash"].handle(target).status == 404


@pytest.mark.parametrize(
    "ref_id", ["abs", "outside", "dots", "rel", "links", "fileuri", "text", "fail"]
)
@pytest.mark.parametrize("side", ["in", "out"])
def test_records_pointing_outside_the_roots_are_not_served(world, ref_id: str, side: str) -> None:
    assert world["dash"].handle(f"/media?side={side}&id={ref_id}&p=h1").status == 404


def test_files_inside_the_roots_are_served_as_thumbnails(world) -> None:
    for side in ("in", "out"):
        resp = world["dash"].handle(f"/media?side={side}&id=ok&p=h1")
        assert resp.status == 200 and resp.body[:2] == b"\xff\xd8"  # a JPEG we made


def test_inputs_need_a_root(world) -> None:
    assert world["bare"].handle("/media?side=out&id=ok&p=h1").status == 200
    assert world["bare"].handle("/media?side=in&id=ok&p=h1").status == 404


def test_the_secret_was_readable_all_along(world) -> None:
    # the refusals above are the roots' doing, not a file the server cannot read
    assert os.access(world["secret"], os.R_OK)
