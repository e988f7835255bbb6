"""Workers in a consumer group on the real embedded broker."""

from __future__ import annotations

import base64
import collections
import signal
import time

import cv2
import numpy as np
import pytest

from imgstream.schema.records import Failure, ImageRef, Result
from tests.helpers import refs_for

pytestmark = pytest.mark.both_brokers


def test_two_workers_give_each_ref_exactly_one_record(topics, worker, write_images, tmp_path):
    root = tmp_path / "in"
    paths = write_images(root, 40)
    (root / "notes.txt").write_text("not an image")
    (tmp_path / "secret.png").write_bytes(paths[0].read_bytes())
    good = refs_for(paths)
    now = int(time.time() * 1000)
    bad = [
        ImageRef("missing", str(root / "nope.png"), now),
        ImageRef("escape", "../secret.png", now),
        ImageRef("text", str(root / "notes.txt"), now),
    ]
    raw = [b"\xff not json", b'{"v":1,"kind":"ref","uri":"x.png"}']
    out = tmp_path / "out"
    workers = [worker(out, root, "--max-batch", "8") for _ in range(2)]
    # Both members first: Apache Kafka lets the first one start at once, and it
    # would finish these few refs before the second joined.
    topics.wait_for_group(workers)
    topics.produce(good + bad, raw)
    topics.stream().wait_for({r.id for r in good + bad}, timeout_s=60)
    assert [w.stop() for w in workers] == [0, 0]
    # Both workers have exited: the topics now hold every record they will write,
    # so a duplicate cannot arrive after the count below.
    everything = topics.read_all()
    records, batches = everything.records, everything.batches
    by_id = collections.Counter(r.id for r in records if r.id is not None)
    assert by_id == {r.id: 1 for r in good + bad}, by_id
    results = {r.id: r for r in records if isinstance(r, Result)}
    failures = {r.id: r for r in records if isinstance(r, Failure)}
    assert set(results) == {r.id for r in good}
    for ref in good:
        out_img = cv2.imread(results[ref.id].output_uri, cv2.IMREAD_UNCHANGED)
        expected = cv2.cvtColor(cv2.imread(ref.uri), cv2.COLOR_BGR2GRAY)
        assert np.array_equal(out_img, expected)
    assert failures["missing"].error_type == "not_found"
    assert failures["escape"].error_type == "forbidden"
    assert failures["text"].error_type == "unsupported_format"
    unparsed = [r for r in records if isinstance(r, Failure) and r.id is None]
    assert sorted(base64.b64decode(f.raw_b64 or "") for f in unparsed) == sorted(raw)
    assert all(f.error_type == "bad_message" for f in unparsed)
    assert sum(b.size for b in batches) == len(good) + len(bad) + len(raw)
    assert len({b.worker for b in batches}) == 2, "one worker did all the work"
    assert all(1 <= b.size <= 8 for b in batches)


def test_kill9_mid_stream_loses_nothing(topics, worker, write_images, tmp_path) -> None:
    root = tmp_path / "in"
    refs = refs_for(write_images(root, 2000, size=(24, 32)))
    topics.produce(refs)
    out = tmp_path / "out"
    max_batch = 16
    args = ("--max-batch", str(max_batch))
    a = worker(out, root, *args)
    b = worker(out, root, *args)
    before = topics.stream().wait_for_count(600, timeout_s=60)
    a.send_signal(signal.SIGKILL)
    assert a.wait(30) == -signal.SIGKILL
    seen = before.ids
    a = worker(out, root, *args)
    topics.stream().wait_for({r.id for r in refs}, timeout_s=120)
    assert a.stop() == 0 and b.stop() == 0
    records = topics.read_all().records
    counts = collections.Counter(r.id for r in records)
    assert set(counts) == {r.id for r in refs}, "refs missing"
    assert all(isinstance(r, Result) for r in records)
    duplicates = sum(n - 1 for n in counts.values())
    print(f"duplicates after SIGKILL: {duplicates} (seen before the kill: {len(seen)})")
    # Only messages in flight at the kill are redone. By design that is at most
    # the in-flight batches (2), one more submitted before the pause, and the open
    # batch: a poll returns at most one batch's worth.
    assert duplicates <= 4 * max_batch, duplicates


def test_sigterm_finishes_and_commits_so_nothing_repeats(topics, worker, write_images, tmp_path):
    root = tmp_path / "in"
    refs = refs_for(write_images(root, 400, size=(24, 32)))
    topics.produce(refs)
    out = tmp_path / "out"
    w = worker(out, root, "--max-batch", "16")
    topics.stream().wait_for_count(100, timeout_s=60)
    assert w.stop() == 0
    first = topics.read_all().ids
    assert len(first) < len(refs), "the first worker finished everything: nothing was tested"
    w = worker(out, root, "--max-batch", "16")
    topics.stream().wait_for({r.id for r in refs}, timeout_s=90)
    assert w.stop() == 0
    ids = [r.id for r in topics.read_all().records]
    assert sorted(ids) == sorted(r.id for r in refs), "missing or duplicated after SIGTERM"
    assert {p.stem for p in out.rglob("*.png")} == {r.id for r in refs}


def test_a_worker_joins_and_leaves_a_running_group(topics, worker, write_images, tmp_path):
    """Every ref gets exactly one record across a join and a leave: each rebalance commits
    what the member finished before it gives its partitions up."""
    root = tmp_path / "in"
    refs = refs_for(write_images(root, 600, size=(24, 32)))
    alone, shared, after = refs[:200], refs[200:400], refs[400:]
    out = tmp_path / "out"
    args = ("--max-batch", "16")
    a = worker(out, root, *args)
    topics.wait_for_group([a])
    topics.produce(alone)
    stream = topics.stream().wait_for({r.id for r in alone}, timeout_s=90)
    b = worker(out, root, *args)
    topics.wait_for_group([a, b])
    topics.produce(shared)
    stream.wait_for({r.id for r in shared}, timeout_s=90)
    assert b.stop() == 0
    topics.wait_for_group([a])  # a holds every partition again
    topics.produce(after)
    stream.wait_for({r.id for r in after}, timeout_s=90)
    assert a.stop() == 0
    records = topics.read_all().records
    counts = collections.Counter(r.id for r in records)
    assert counts == {r.id: 1 for r in refs}, {k: n for k, n in counts.items() if n != 1}
    assert all(isinstance(r, Result) for r in records)
    by_worker = {
        phase: {r.worker for r in records if r.id in {x.id for x in part}}
        for phase, part in (("alone", alone), ("shared", shared), ("after", after))
    }
    assert len(by_worker["shared"]) == 2, by_worker
    assert by_worker["alone"] == by_worker["after"] and len(by_worker["alone"]) == 1, by_worker
