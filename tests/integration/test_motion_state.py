"""Per-source state survives SIGKILL, a new member and exactly-once: motion equals one pass.

Two sources are captured by ``imgstream capture`` from a real video of people
walking (OpenCV's sample ``vtest.avi``, `make vtest`), keyed by source. Two
workers run ``--ops motion --max-batch 4``; one is SIGKILLed after a quarter of
the frames and replaced (or a third worker joins). Every frame's
``outputs.motion`` must equal a sequential, one-process computation of the
definition over the same stored frames, and each source has exactly one
``first: true``. With ``--exactly-once`` a read_committed reader sees exactly
one record per frame. Apache Kafka only: the state topic's compaction and the
transactions are Kafka's.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import pytest

from imgstream.kafka_io.scan import scan
from imgstream.schema.records import Result
from tests.fixtures.deploy import missing
from tests.fixtures.kafka import Topics
from tests.integration.test_exactly_once import read_committed
from tests.unit.test_motion import reference_motion

pytestmark = pytest.mark.kafka_only("the state topic and transactions on the real cluster")

VTEST = Path(os.environ.get("HOME", "/root")) / ".cache" / "imgstream" / "vtest.avi"
#: (source, frames kept per second, frames): two different samplings of the video.
SOURCES = (("cam1", 5.0, 36), ("cam2", 3.0, 36))
FLAGS = ("--ops", "motion", "--max-batch", "4", "--threads", "2")


@pytest.fixture(scope="module")
def video() -> Path:
    if not VTEST.exists():
        missing("vtest.avi", "`make vtest` takes it from Debian's package opencv-doc")
    return VTEST


def _capture(topics: Topics, video: Path, store: Path) -> list[subprocess.Popen[bytes]]:
    """Both sources captured at the video's own pace (live), onto the refs topic."""
    procs = []
    for name, fps, frames in SOURCES:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "imgstream.cli",
                    "capture",
                    str(video),
                    "--source",
                    name,
                    "--fps",
                    str(fps),
                    "--max-frames",
                    str(frames),
                    "--store",
                    str(store),
                    "--realtime",
                    "--bootstrap",
                    topics.bootstrap,
                    "--topic",
                    topics.refs,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    return procs


def _captured(procs: list[subprocess.Popen[bytes]]) -> None:
    """Wait for the captures (killed if the test fails first); each must exit 0."""
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def _reference(topics: Topics) -> dict[str, dict[str, Any]]:
    """motion over each source's stored frames, in their order on the refs topic."""
    by_source: dict[str, list[tuple[int, str, str]]] = collections.defaultdict(list)
    for ref in topics.read_refs():
        assert ref.source is not None
        by_source[ref.source].append((ref.ts, ref.id, ref.uri))
    want = {}
    for frames in by_source.values():
        frames.sort()
        images = [cv2.imread(uri) for _, _, uri in frames]
        for (_, ref_id, _), motion in zip(frames, reference_motion(images), strict=True):
            want[ref_id] = motion
    return want


def _check(results: list[Result], want: dict[str, dict[str, Any]]) -> None:
    assert {r.id for r in results} == set(want)
    for r in results:  # duplicates (at-least-once redoes) must be equal too
        got = {k: r.outputs["motion"][k] for k in ("first", "ratio", "boxes")}
        assert got == want[r.id], r.id
    firsts = collections.Counter(r.source for r in {r.id: r for r in results}.values()
                                 if r.outputs["motion"]["first"])  # fmt: skip
    assert firsts == {name: 1 for name, _, _ in SOURCES}


def _run_group(topics: Topics, video: Path, store: Path, out: Path, *extra: str, event: str) -> Any:
    """Two workers on the live captures; one killed and replaced, or a third joins."""
    n = sum(frames for _, _, frames in SOURCES)
    flags = (*FLAGS, *extra)
    store.mkdir()
    first = topics.start_worker(out, store, *flags)
    second = topics.start_worker(out, store, *flags)
    captures = _capture(topics, video, store)
    try:
        stream = topics.stream()
        stream.wait_for_count(n // 4, timeout_s=120)
        if event == "kill":
            first.send_signal(signal.SIGKILL)
            first.wait(30)
            workers = [second, topics.start_worker(out, store, *flags)]
        else:  # a third member joins: partitions move while frames arrive
            workers = [first, second, topics.start_worker(out, store, *flags)]
            topics.wait_for_group(workers, timeout_s=60)
    finally:
        _captured(captures)
    stream.wait_for_count(n, timeout_s=240)
    for w in workers:
        assert w.stop() == 0, w.output()
    return stream


@pytest.mark.parametrize("event", ["kill", "join"])
def test_motion_equals_one_sequential_pass_across_a_kill_or_a_join(
    topics, tmp_path, video, event
) -> None:
    store = tmp_path / "frames"
    stream = _run_group(topics, video, store, tmp_path / "out", event=event)
    results = [r for r in stream.records if isinstance(r, Result)]
    _check(results, _reference(topics))


def test_motion_with_exactly_once_one_record_per_frame(topics, tmp_path, video) -> None:
    store = tmp_path / "frames"
    _run_group(topics, video, store, tmp_path / "out", "--exactly-once", event="kill")
    ids = [r.id for r in topics.read_refs()]
    records = read_committed(topics.bootstrap, [topics.results, topics.dlq])
    results = [r for r in records if isinstance(r, Result)]
    counts = collections.Counter(r.id for r in results)
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    _check(results, _reference(topics))


def test_the_state_topic_holds_a_snapshot_per_source(topics, tmp_path, video) -> None:
    """What was committed last is on the state topic: one key per source of the group."""
    store = tmp_path / "frames"
    _captured(_capture(topics, video, store))
    worker = topics.start_worker(tmp_path / "out", store, *FLAGS, "--idle-exit", "3")
    topics.stream().wait_for_count(sum(f for _, _, f in SOURCES), timeout_s=120)
    assert worker.wait(60) == 0
    keys = {json.loads(k)[4] for k, _ in scan(topics.bootstrap, "imgstream.state")
            if k is not None and json.loads(k)[0] == topics.group}  # fmt: skip
    assert keys == {name for name, _, _ in SOURCES}
