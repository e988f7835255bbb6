"""Hundreds of hostile image files through one worker on a real broker (issue 20).

``tests/fixtures/mutate.py`` makes 649 damaged files from the sample photos
(JPEG, PNG, TIFF, WebP, BMP and GIF, each with bits flipped, cut short,
header fields edited: sizes zero, huge, or large but allowed, wrong magic,
chunk, segment and IFD lengths, counts and offsets; junk inserted, chunks
repeated, a JPEG scan 150 more times), plus the 24 undamaged originals.
One ``imgstream work`` process, the real CLI with the default limits and a
realistic pipeline, takes them all. What must hold:

- every ref ends as exactly one result or one failure, and every failure has
  a type a damaged file deserves (``decode_error``, ``too_large``,
  ``unsupported_format``): no ``op_error`` (an exception nobody typed), no
  ``timeout``;
- the worker never dies: it exits 0 on its own (``--idle-exit``) once all is
  done, and its group has committed past every ref;
- no image takes 2 s. A result carries its stage timings (load, decode, ops,
  encode, store); a failure carries none, so the worker runs with
  ``--image-timeout 2``, which turns an image still running 2 s after a
  thread took it into a ``timeout`` failure: none may appear, so every
  image, failed or not, ran for less than 2 s. (Before the PNG chunk check,
  four 15 KB PNGs whose IDAT length says 2^31-1 took 4 s and 2 GB each: their
  threads were abandoned, and the third stuck one stopped the worker with
  exit 6, 279 refs unanswered);
- the worker's peak memory (``peak memory N MB`` in its log at exit) is
  printed with the figures, and stays under :data:`MAX_PEAK_MB`.

Run with ``-s`` to see the figures: files by format and kind, outcomes by
type, the slowest result, peak memory and the wall time.
"""

from __future__ import annotations

import collections
import re
import time

import pytest

from imgstream.errors import DECODE_ERROR, TOO_LARGE, UNSUPPORTED_FORMAT
from imgstream.kafka_io import topic_state
from imgstream.schema.records import Failure, ImageRef, Result
from tests.fixtures import mutate
from tests.helpers import wait_until

pytestmark = pytest.mark.both_brokers

PIPELINE = "gray|clahe|canny"
#: The stages of a result's timings that are the image's own work (``wait``
#: is time queued for a thread).
WORK_STAGES = ("load", "decode", "ops", "encode", "store")
IMAGE_LIMIT_S = 2.0
#: Two image threads on up to 9 Mpx each (the largest a mutant may decode
#: to, mutate.LARGE squared) plus the worker's clients: measured 260-280 MB.
MAX_PEAK_MB = 1024
EXPECTED_TYPES = {DECODE_ERROR, TOO_LARGE, UNSUPPORTED_FORMAT}


def test_hostile_files_all_end_as_a_result_or_a_typed_failure(topics, tmp_path) -> None:
    started = time.monotonic()
    root = tmp_path / "in"
    written = mutate.write(root)
    assert sum(m.kind != "original" for m, _ in written) >= 600
    now_ms = int(time.time() * 1000)
    refs = [ImageRef(id=m.name, uri=str(p), ts=now_ms, source=m.format) for m, p in written]
    topics.produce(refs)

    worker = topics.start_worker(
        tmp_path / "out",
        root,
        "--ops",
        PIPELINE,
        "--image-timeout",
        str(IMAGE_LIMIT_S),
        "--idle-exit",
        "3",
        log=tmp_path / "worker.log",
    )
    stream = topics.stream()
    wanted = {r.id for r in refs}

    def all_answered() -> bool:
        stream.poll()
        if wanted <= stream.ids:
            return True
        if worker.running():
            return False
        stream.drain()  # it may have sent the last records as it exited
        missing = sorted(wanted - stream.ids)
        assert not missing, f"worker exited {worker.returncode}, {len(missing)} refs unanswered"
        return True

    wait_until(all_answered, 120, interval=0, what="a record for every ref")
    assert worker.wait(60) == 0, worker.output()[-3000:]
    stream.drain()
    elapsed = time.monotonic() - started
    log = worker.output()
    assert "Traceback" not in log, log[-3000:]

    # Exactly one record per ref, of a type a damaged file deserves.
    by_id = collections.defaultdict(list)
    for record in stream.records:
        by_id[record.id].append(record)
    assert sorted(by_id) == sorted(r.id for r in refs)
    repeated = {k: len(v) for k, v in by_id.items() if len(v) != 1}
    assert not repeated, repeated
    records = {k: v[0] for k, v in by_id.items()}
    failures = [r for r in records.values() if isinstance(r, Failure)]
    results = [r for r in records.values() if isinstance(r, Result)]
    untyped = {f.id: (f.error_type, f.error_message) for f in failures}
    untyped = {k: v for k, v in untyped.items() if v[0] not in EXPECTED_TYPES}
    assert not untyped, untyped
    originals = [m.name for m, _ in written if m.kind == "original"]
    assert all(isinstance(records[name], Result) for name in originals)

    # No image over 2 s: results by their timings, failures by --image-timeout.
    def work_s(r: Result) -> float:
        return sum(r.timings.get(stage, 0.0) for stage in WORK_STAGES)

    slowest = max(results, key=work_s)
    assert work_s(slowest) < IMAGE_LIMIT_S, (slowest.id, slowest.timings)

    # Committed past every ref: nothing left for a restart to redo.
    ends = {s.partition: s.highwater for s in topic_state(topics.bootstrap, topics.refs)}

    def committed() -> bool:
        states = topic_state(topics.bootstrap, topics.refs, topics.group)
        return all(s.committed == ends[s.partition] for s in states)

    wait_until(committed, 20, what="the group's commits at the end of the refs topic")

    peak = re.findall(r"peak memory (\d+) MB", log)
    assert peak, log[-2000:]
    peak_mb = int(peak[-1])
    kinds = collections.Counter((m.format, m.kind) for m, _ in written)
    print(f"\n{len(written)} files through one worker in {elapsed:.1f}s")
    for fmt in mutate.FORMATS:
        counts = ", ".join(f"{k} {kinds[(fmt, k)]}" for k in mutate.KINDS if kinds[(fmt, k)])
        print(f"  {fmt}: {counts}")
    outcomes = collections.Counter(
        "result" if isinstance(r, Result) else r.error_type for r in records.values()
    )
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    print(f"slowest result: {slowest.id} {work_s(slowest):.3f}s ({slowest.width}x{slowest.height})")
    print(f"worker peak memory: {peak_mb} MB")
    assert 0 < peak_mb < MAX_PEAK_MB
