"""The CLI over an object store, as a user runs it: refs and outputs in a real S3 server.

``imgstream run s3://bucket/in --out s3://bucket/out`` (embedded broker), and
``imgstream produce s3://...`` + ``imgstream work --out s3://...`` on the
session broker. Outputs are read back from the server and compared with
OpenCV's gray conversion of the original photos.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgstream.schema.records import Failure, Result
from tests.fixtures.s3 import S3Server


def _imgstream(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        cwd=cwd,
    )


def _assert_gray(server: S3Server, bucket: str, key: str, original: Path) -> None:
    data = server.get(bucket, key)
    assert data is not None, f"no output at s3://{bucket}/{key}"
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    expected = cv2.cvtColor(cv2.imread(str(original)), cv2.COLOR_BGR2GRAY)
    assert np.array_equal(out, expected), original.name


@pytest.mark.parametrize("broker_kind", ["embedded", "bootstrap"])
def test_run_from_s3_to_s3(
    s3_server: S3Server,
    s3_bucket: str,
    photos: list[Path],
    tmp_path: Path,
    broker_kind: str,
    request: pytest.FixtureRequest,
) -> None:
    """`run s3://.../in --out s3://.../out`, with its own broker or a running one."""
    b = s3_bucket
    bootstrap = []
    if broker_kind == "bootstrap":
        bootstrap = ["--bootstrap", request.getfixturevalue("broker").bootstrap]
    for p in photos:
        s3_server.put(b, f"in/{p.name}", p.read_bytes())
    big = max(photos, key=lambda p: p.stat().st_size)
    s3_server.put(b, "in/huge/big.jpg", big.read_bytes() + bytes(1024))
    s3_server.put(b, "private/secret.jpg", photos[0].read_bytes())
    manifest = tmp_path / "extra.txt"
    manifest.write_text(f"s3://{b}/private/secret.jpg\ns3://{b}/in/missing.jpg\n")
    proc = _imgstream(
        "run",
        f"s3://{b}/in",
        f"@{manifest}",
        "--out",
        f"s3://{b}/out",
        "--root",
        f"s3://{b}/in",
        "--max-bytes",
        str(big.stat().st_size),
        "--max-wait",
        "0.2",
        *bootstrap,
        env=s3_server.env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "missing     0" in proc.stdout
    assert f"outputs     s3://{b}/out/" in proc.stdout
    lines = (tmp_path / "imgstream-run" / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    by_uri = {r["uri"]: r for r in records if r["kind"] in ("result", "failure")}
    failures = {uri: r["error"]["type"] for uri, r in by_uri.items() if r["kind"] == "failure"}
    assert failures == {
        f"s3://{b}/private/secret.jpg": "forbidden",
        f"s3://{b}/in/missing.jpg": "not_found",
        f"s3://{b}/in/huge/big.jpg": "too_large",
    }
    for p in photos:
        r = by_uri[f"s3://{b}/in/{p.name}"]
        assert r["kind"] == "result"
        prefix = f"s3://{b}/"
        assert r["output_uri"].startswith(prefix + "out/" + r["pipeline_hash"] + "/in/")
        _assert_gray(s3_server, b, r["output_uri"][len(prefix) :], p)
    assert len(s3_server.keys(b, "out/")) == len(photos)


def test_produce_and_work_over_s3(
    s3_server: S3Server,
    s3_bucket: str,
    s3_env_set: dict[str, str],
    photos: list[Path],
    topics,
    worker,
    tmp_path: Path,
) -> None:
    b = s3_bucket
    for p in photos:
        s3_server.put(b, f"cams/front/{p.name}", p.read_bytes())
    produced = _imgstream(
        "produce",
        f"s3://{b}/cams",
        "--bootstrap",
        topics.bootstrap,
        "--topic",
        topics.refs,
        env=s3_server.env,
        cwd=tmp_path,
    )
    assert produced.returncode == 0, produced.stdout + produced.stderr
    refs = topics.read_refs()
    assert sorted(r.uri for r in refs) == sorted(f"s3://{b}/cams/front/{p.name}" for p in photos)
    assert {r.source for r in refs} == {"front"}
    w = worker(f"s3://{b}/out", f"s3://{b}/cams", "--idle-exit", "5")
    stream = topics.stream().wait_for({r.id for r in refs}, timeout_s=120)
    assert w.wait(timeout=120) == 0
    by_uri = {r.uri: r for r in stream.records}
    for p in photos:
        record = by_uri[f"s3://{b}/cams/front/{p.name}"]
        assert isinstance(record, Result), record
        assert not isinstance(record, Failure)
        _assert_gray(s3_server, b, record.output_uri[len(f"s3://{b}/") :], p)


def test_tiled_run_stores_tiles_and_the_mosaic_in_s3(
    s3_server: S3Server, s3_bucket: str, photos: list[Path], tmp_path: Path
) -> None:
    b = s3_bucket
    base = cv2.imread(str(next(p for p in photos if p.name == "coffee.jpg")))
    big = cv2.resize(base, (1500, 1100), interpolation=cv2.INTER_CUBIC)
    local = tmp_path / "big.png"
    cv2.imwrite(str(local), big)
    s3_server.put(b, "src/big.png", local.read_bytes())
    proc = _imgstream(
        "run",
        f"s3://{b}/src",
        "--out",
        f"s3://{b}/out",
        "--tile",
        "512",
        "--overlap",
        "16",
        "--workers",
        "2",
        env=s3_server.env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 images in 9 tiles; 1 stitched" in proc.stdout
    tiles = s3_server.keys(b, "out/tiles/")
    assert len(tiles) == 9, tiles
    records = [
        json.loads(line)
        for line in (tmp_path / "imgstream-run" / "results.jsonl").read_text().splitlines()
    ]
    fused = [r for r in records if r["kind"] == "result" and r.get("batch_id") == "fused"]
    assert len(fused) == 1, records
    assert fused[0]["output_uri"].startswith(f"s3://{b}/out/")
    _assert_gray(s3_server, b, fused[0]["output_uri"][len(f"s3://{b}/") :], local)


def test_capture_uploads_frames_to_s3(
    s3_server: S3Server,
    s3_bucket: str,
    s3_env_set: dict[str, str],
    topics,
    worker,
    tmp_path: Path,
) -> None:
    b = s3_bucket
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(20):
        writer.write(np.full((120, 160, 3), (i * 10) % 256, np.uint8))
    writer.release()
    captured = _imgstream(
        "capture",
        str(video),
        "--fps",
        "5",
        "--source",
        "cam1",
        "--store",
        f"s3://{b}/frames",
        "--bootstrap",
        topics.bootstrap,
        "--topic",
        topics.refs,
        env=s3_server.env,
        cwd=tmp_path,
    )
    assert captured.returncode == 0, captured.stdout + captured.stderr
    frames = s3_server.keys(b, "frames/cam1/")
    assert 9 <= len(frames) <= 11, frames  # 2 s of video at 5 fps, within one frame
    refs = topics.read_refs()
    assert sorted(r.uri for r in refs) == sorted(f"s3://{b}/{k}" for k in frames)
    w = worker(f"s3://{b}/out", f"s3://{b}/frames", "--idle-exit", "5")
    stream = topics.stream().wait_for({r.id for r in refs}, timeout_s=120)
    assert w.wait(timeout=120) == 0
    assert all(isinstance(r, Result) for r in stream.records), stream.records
    assert len(s3_server.keys(b, "out/")) == len(frames)


def _no_aws_env(tmp_path: Path, **env: str) -> dict[str, str]:
    empty = tmp_path / "empty.ini"
    empty.write_text("")
    base = {k: "" for k in os.environ if k.startswith("AWS_")}
    return {
        **base,
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_CONFIG_FILE": str(empty),
        **env,
    }


@pytest.mark.parametrize(
    ("command", "setting", "endpoint"),
    [
        ("work", "AWS_ENDPOINT_URL", "::::"),
        ("work", "AWS_ENDPOINT_URL", "http://[bad"),
        ("work", "AWS_ENDPOINT_URL", "http://h:99999999"),
        ("work", "AWS_ENDPOINT_URL", "file:///x"),
        ("work", "AWS_ENDPOINT_URL_S3", "http://h:99999999"),
        ("run", "AWS_ENDPOINT_URL", "::::"),
        ("work", "endpoint_url", "http://[bad"),
    ],
)
def test_a_bad_s3_endpoint_is_one_line_and_exit_2(
    tmp_path: Path, command: str, setting: str, endpoint: str
) -> None:
    """object_store panicked on these inside the first request; now refused at start-up."""
    if setting == "endpoint_url":
        config = tmp_path / "aws-config"
        config.write_text(f"[default]\nendpoint_url = {endpoint}\n")
        env = _no_aws_env(tmp_path, AWS_CONFIG_FILE=str(config))
    else:
        env = _no_aws_env(tmp_path, **{setting: endpoint})
    with socket.socket() as closed:  # bound, not listening: no broker is reached
        closed.bind(("127.0.0.1", 0))
        bootstrap = f"127.0.0.1:{closed.getsockname()[1]}"
        if command == "work":
            args = ["work", "--root", "s3://b/in", "--out", str(tmp_path / "out")]
            args += ["--bootstrap", bootstrap, "--connect-timeout", "2"]
        else:
            args = ["run", "s3://b/in", "--out", "s3://b/out", "--root", "s3://b/in"]
        proc = _imgstream(*args, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "panicked" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert setting in lines[0] and "endpoint" in lines[0], lines[0]
