"""A full output disk holds work back instead of dead-lettering it.

The worker's ``--out`` is a 3 MB tmpfs that fills up mid-run. No ref may be
dead-lettered for lack of space, the group's committed offset must stay below
the first image whose output is not written, and once space is freed the
worker must finish every ref by itself. A SIGTERM while the store is full
must stop the worker promptly without committing the unwritten refs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgstream.broker import free_port
from imgstream.kafka_io import KafkaSink, TopicReader, topic_state
from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec
from imgstream.schema.codec import encode
from imgstream.schema.decoding import decode_record
from imgstream.schema.records import Failure, ImageRef, Result

N = 30


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs, nearly full: about 1 MB is left for outputs."""
    mount = tmp_path / "out"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        st = os.statvfs(mount)
        free = st.f_bavail * st.f_frsize
        (mount / "filler").write_bytes(b"\0" * (free - 1_000_000))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _produce(topics, tmp_path: Path) -> tuple[Path, list[ImageRef]]:
    """N noisy 300x300 images (~90 kB outputs each) as refs on partition 0, in order."""
    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(7)
    refs = []
    for i in range(N):
        path = root / f"img{i:03d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))
        refs.append(ImageRef(id=path.stem, uri=str(path), ts=int(time.time() * 1000), source="s"))
    sink = KafkaSink(topics.bootstrap)
    for ref in refs:
        sink.send_partition(topics.refs, 0, b"s", encode(ref))
    sink.close()
    return root, refs


def _gauge(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def _wait_blocked(worker, port: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while _gauge(port, "imgstream_sink_blocked") != 1.0:
        assert worker.poll() is None, "the worker exited"
        assert time.monotonic() < deadline, "the output store never filled up"
        time.sleep(0.2)


def _read(reader: TopicReader, seconds: float) -> list[Result | Failure]:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for msg in reader.poll(0.2):
            rec = decode_record(msg.value)
            if isinstance(rec, (Result, Failure)):
                out.append(rec)
    return out


def _first_unwritten(out: Path, refs: list[ImageRef]) -> int:
    written = {p.stem for p in out.glob("*/s/*.png")}
    return next(i for i, ref in enumerate(refs) if ref.id not in written)


def _committed(topics) -> int:
    [state] = [
        s for s in topic_state(topics.bootstrap, topics.refs, topics.group) if s.partition == 0
    ]
    return state.committed or 0


def test_a_full_output_disk_loses_nothing_and_recovers_by_itself(
    topics, tmp_path, small_disk
) -> None:
    root, refs = _produce(topics, tmp_path)
    port = free_port()
    worker = topics.start_worker(
        small_disk, root, "--max-batch", "4", "--metrics-port", str(port), log=tmp_path / "w.log"
    )
    reader = TopicReader(topics.bootstrap, [topics.results, topics.dlq])
    try:
        _wait_blocked(worker, port)
        during = _read(reader, 3.0)  # give a wrong worker time to dead-letter
        assert not [r for r in during if isinstance(r, Failure)], "dead-lettered for lack of space"
        first = _first_unwritten(small_disk, refs)
        assert 0 < first < N
        assert _committed(topics) <= first, "committed past an image whose output is unwritten"
        assert len({r.id for r in during}) < N
        (small_disk / "filler").unlink()  # space comes back
        after = during + _read_until(reader, {r.id for r in refs}, during, 120)
        assert {r.id for r in after if isinstance(r, Result)} == {r.id for r in refs}
        assert not [r for r in after if isinstance(r, Failure)]
        assert _gauge(port, "imgstream_sink_blocked") == 0.0
    finally:
        reader.close()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    assert code == 0
    assert _committed(topics) == N


def _read_until(reader, ids, seen, timeout_s) -> list[Result | Failure]:
    got: list[Result | Failure] = []
    have = {r.id for r in seen if isinstance(r, Result)}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ids <= have:
        for msg in reader.poll(0.2):
            rec = decode_record(msg.value)
            if isinstance(rec, (Result, Failure)):
                got.append(rec)
                if isinstance(rec, Result):
                    have.add(rec.id)
    return got


def test_sigterm_while_the_disk_is_full_stops_promptly_without_committing(
    topics, tmp_path, small_disk
) -> None:
    root, refs = _produce(topics, tmp_path)
    port = free_port()
    worker = topics.start_worker(
        small_disk, root, "--max-batch", "4", "--metrics-port", str(port), log=tmp_path / "w.log"
    )
    try:
        _wait_blocked(worker, port)
        worker.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = worker.wait(30)
        assert time.monotonic() - began < 15
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert code == 0
    first = _first_unwritten(small_disk, refs)
    assert _committed(topics) <= first
    reader = TopicReader(topics.bootstrap, [topics.dlq])
    try:
        assert _read(reader, 2.0) == []
    finally:
        reader.close()


def test_one_unwritable_camera_folder_fails_its_images_while_the_rest_flow(
    topics, tmp_path
) -> None:
    """out/<hash>/cam1 is a file: cam1's images are io_error failures, cam2's are written.

    Before, the output gate was one global flag: cam2's successes cleared it
    while cam1's write kept failing, so it flipped (pausing and resuming the
    partitions, a log line each time), cam1's images were never settled and
    ``--max-outage`` never fired.
    """
    root = tmp_path / "in"
    root.mkdir()
    rng = np.random.default_rng(3)
    refs = []
    for i in range(16):
        source = "cam1" if i % 2 else "cam2"
        path = root / f"{source}-{i:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        refs.append(
            ImageRef(id=path.stem, uri=str(path), ts=int(time.time() * 1000), source=source)
        )
    out = tmp_path / "out"
    phash = parse_spec("gray", build_registry()).hash
    (out / phash).mkdir(parents=True)
    (out / phash / "cam1").write_bytes(b"not a folder")
    topics.produce(refs)
    port = free_port()
    worker = topics.start_worker(
        out,
        root,
        "--ops",
        "gray",
        "--max-outage",
        "5",
        "--metrics-port",
        str(port),
        log=tmp_path / "w.log",
    )
    try:
        stream = topics.stream().wait_for({r.id for r in refs}, timeout_s=90)
        assert worker.poll() is None, "the worker stopped"
        assert _gauge(port, "imgstream_sink_blocked") == 0.0
    finally:
        code = worker.stop()
    assert code == 0
    records = stream.records
    failed = {r.id: r for r in records if isinstance(r, Failure)}
    written = {r.id for r in records if isinstance(r, Result)}
    assert set(failed) == {r.id for r in refs if r.source == "cam1"}
    assert {f.error_type for f in failed.values()} == {"io_error"}
    assert written == {r.id for r in refs if r.source == "cam2"}
    log = worker.output()
    assert log.count("output store unavailable") <= 1, "the output gate flip-flopped"
    assert log.count("refuses writes") == 1  # one line for the folder, not one per image
