"""Replay of a time range, status, and offsets reset, on the real broker."""

from __future__ import annotations

import json
import time

from imgstream.ops import build_registry
from imgstream.pipeline import parse_spec
from tests.helpers import cli
from tests.integration.conftest import collect_until, refs_for, stop, write_images


def test_replay_processes_exactly_the_range(topics, tmp_path) -> None:
    root = tmp_path / "in"
    before, during, after = (
        refs_for(write_images(root / name, n, size=(30, 40)), source=name)
        for name, n in (("before", 5), ("during", 7), ("after", 4))
    )
    topics.produce(before)
    time.sleep(1.1)
    t1 = int(time.time() * 1000)
    topics.produce(during)
    time.sleep(1.1)
    t2 = int(time.time() * 1000)
    time.sleep(0.1)
    topics.produce(after)
    out = tmp_path / "out"
    worker = topics.start_worker(out, root)
    try:
        collect_until(topics.records(), {r.id for r in before + during + after}, 60)
    finally:
        stop(worker)
    gray = parse_spec("gray", build_registry()).hash
    originals = {p: p.read_bytes() for p in (out / gray).rglob("*.png")}
    mtimes = {p: p.stat().st_mtime_ns for p in originals}
    assert len(originals) == 16
    spec = "gray|equalize"
    new_hash = parse_spec(spec, build_registry()).hash
    common = (
        "--bootstrap",
        topics.bootstrap,
        "--topic",
        topics.refs,
        "--results-topic",
        topics.results,
        "--dlq-topic",
        topics.dlq,
    )
    rep = cli(
        "replay",
        *common,
        "--from",
        str(t1),
        "--to",
        str(t2),
        "--ops",
        spec,
        "--out",
        str(out),
        "--root",
        str(root),
    )
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "replayed    7 refs in range, 9 outside it" in rep.stdout
    replayed = {p.stem for p in (out / new_hash).rglob("*.png")}
    assert replayed == {r.id for r in during}
    assert {p: p.read_bytes() for p in originals} == originals
    assert {p: p.stat().st_mtime_ns for p in originals} == mtimes
    group = rep.stdout.split("group ")[1].split()[0]
    status = cli(
        "status",
        "--bootstrap",
        topics.bootstrap,
        "--topic",
        topics.refs,
        "--group",
        group,
        "--format",
        "json",
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["lag"] == 0
    # the same replay again is idempotent: nothing left to do
    again = cli(
        "replay",
        *common,
        "--from",
        str(t1),
        "--to",
        str(t2),
        "--ops",
        spec,
        "--out",
        str(out),
        "--root",
        str(root),
    )
    assert again.returncode == 0 and "replayed    0 refs in range" in again.stdout


def test_offsets_reset(topics, tmp_path) -> None:
    topics.produce(refs_for(write_images(tmp_path / "a", 4), source="a"))
    time.sleep(1.1)
    t = int(time.time() * 1000)
    topics.produce(refs_for(write_images(tmp_path / "b", 4), source="b"))
    base = (
        "offsets",
        "reset",
        "--bootstrap",
        topics.bootstrap,
        "--topic",
        topics.refs,
        "--group",
        "ops-" + topics.group,
    )

    def group_lag() -> int:
        status = cli(
            "status",
            "--bootstrap",
            topics.bootstrap,
            "--topic",
            topics.refs,
            "--group",
            "ops-" + topics.group,
            "--format",
            "json",
        )
        return int(json.loads(status.stdout)["lag"])

    latest = cli(*base, "--to-latest")
    assert latest.returncode == 0, latest.stderr
    lag = group_lag()
    assert lag == 0
    assert cli(*base, "--to-time", str(t)).returncode == 0
    lag = group_lag()
    assert lag == 4
    bad = cli(*base)
    assert bad.returncode == 2 and "exactly one of" in bad.stderr
