"""Batches that take longer than max.poll.interval.ms cause no rebalance and lose nothing."""

from __future__ import annotations

import re
import time
import urllib.request

import cv2

from imgstream.broker import free_port
from imgstream.schema.records import Result
from tests.helpers import refs_for


def test_slow_batches_do_not_rebalance(topics, worker, tmp_path, photos) -> None:
    root = tmp_path / "in"
    root.mkdir()
    base = cv2.imread(str(photos[0]))
    paths = []
    for i in range(12):
        path = root / f"big{i:02d}.png"
        cv2.imwrite(str(path), cv2.resize(base, (1920, 1080)) + i)
        paths.append(path)
    refs = refs_for(paths)
    topics.produce(refs)
    port = free_port()
    # denoise takes ~1.5 s per 1080p frame: a batch of 6 is ~9 s of work, over the
    # 7 s max.poll.interval.ms, so only polling during processing keeps the member in.
    w = worker(
        tmp_path / "out",
        root,
        "--ops",
        "denoise",
        "--max-batch",
        "6",
        "--threads",
        "2",
        "--max-poll-interval",
        "7000",
        "--metrics-port",
        str(port),
    )
    started = time.monotonic()
    topics.stream().wait_for({r.id for r in refs}, timeout_s=120)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert w.stop() == 0
    everything = topics.read_all()
    records, batches = everything.records, everything.batches
    assert {r.id for r in records if isinstance(r, Result)} == {r.id for r in refs}
    assert len(records) == len(refs), "duplicates mean a rebalance redid work"
    busiest = max(
        sum(r.timings["ops"] for r in records if r.batch_id == b.batch_id) for b in batches
    )
    assert busiest > 7.0, f"the test did not make a batch slower than the interval ({busiest})"
    revoked = re.search(r'imgstream_rebalances_total\{event="revoked"\} (\S+)', metrics)
    assigned = re.search(r'imgstream_rebalances_total\{event="assigned"\} (\S+)', metrics)
    assert revoked and float(revoked.group(1)) == 0.0, metrics
    assert assigned and float(assigned.group(1)) == 1.0
    assert time.monotonic() - started < 120
