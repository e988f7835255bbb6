"""Replay of a time range, status, and offsets reset, on the real broker."""

from __future__ import annotations

import json
import time

import pytest

from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec
from tests.helpers import refs_for

pytestmark = pytest.mark.both_brokers


def test_replay_processes_exactly_the_range(topics, worker, write_images, run_cli, tmp_path):
    root = tmp_path / "in"
    before, during, after = (
        refs_for(write_images(root / name, n, size=(30, 40)), source=name)
        for name, n in (("before", 5), ("during", 7), ("after", 4))
    )
    # The range is by message timestamp (ms): the pauses put whole milliseconds
    # between the groups, so each bound falls strictly between two of them.
    topics.produce(before)
    time.sleep(0.01)
    t1 = int(time.time() * 1000)
    topics.produce(during)
    time.sleep(0.01)
    t2 = int(time.time() * 1000)
    time.sleep(0.01)
    topics.produce(after)
    out = tmp_path / "out"
    w = worker(out, root)
    topics.stream().wait_for({r.id for r in before + during + after}, timeout_s=60)
    assert w.stop() == 0
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
    rep = run_cli(
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
    status = run_cli(
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
    again = run_cli(
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


def test_offsets_reset(topics, write_images, run_cli, tmp_path) -> None:
    topics.produce(refs_for(write_images(tmp_path / "a", 4), source="a"))
    time.sleep(0.01)  # a whole millisecond between the last "a" and t
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
        status = run_cli(
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

    latest = run_cli(*base, "--to-latest")
    assert latest.returncode == 0, latest.stderr
    lag = group_lag()
    assert lag == 0
    assert run_cli(*base, "--to-time", str(t)).returncode == 0
    lag = group_lag()
    assert lag == 4
    bad = run_cli(*base)
    assert bad.returncode == 2 and "exactly one of" in bad.stderr
