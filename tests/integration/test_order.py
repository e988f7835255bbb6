"""One source's results leave in capture order across batches and workers.

A generated 30 s video is captured at 10 fps (300 frames, one source, one
refs partition) into two workers with ``--max-batch 4``: about 75 batches,
several in flight at once, overlapping their image work. The results topic's
``result`` records of the source must be in capture order (no inversion) and
every frame must have one.
"""

from __future__ import annotations

import itertools
import time

import cv2
import numpy as np

from imgstream.schema.decoding import decode_record
from imgstream.schema.records import BatchSummary, Result
from tests.helpers import cli


def _make_video(path, seconds: float, fps: int) -> int:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    n = int(seconds * fps)
    for i in range(n):
        frame = np.full((240, 320, 3), (i * 3) % 256, np.uint8)
        cv2.putText(frame, str(i), (60, 140), cv2.FONT_HERSHEY_SIMPLEX, 3, (0, 0, 255), 5)
        writer.write(frame)
    writer.release()
    return n


def test_results_of_a_captured_video_stay_in_capture_order(topics, tmp_path) -> None:
    video = tmp_path / "clip.avi"
    _make_video(video, seconds=30.0, fps=30)
    store = tmp_path / "frames"
    store.mkdir()
    extra = ("--max-batch", "4", "--max-wait", "0.05")
    workers = [topics.start_worker(tmp_path / "out", store, *extra) for _ in range(2)]
    reader = topics.records()
    try:
        proc = cli(
            "capture",
            str(video),
            "--fps",
            "10",
            "--source",
            "cam",
            "--store",
            str(store),
            "--bootstrap",
            topics.bootstrap,
            "--topic",
            topics.refs,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr
        frames = sorted((store / "cam").glob("*.jpg"))
        assert len(frames) >= 300, proc.stdout
        ids = {f"cam-{p.stem}" for p in frames}
        results: list[Result] = []
        batches: list[BatchSummary] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not ids <= {r.id for r in results}:
            for msg in reader.poll(0.2):
                rec = decode_record(msg.value)
                if isinstance(rec, Result) and rec.source == "cam":
                    results.append(rec)
                elif isinstance(rec, BatchSummary):
                    batches.append(rec)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
            worker.wait(60)
    assert {r.id for r in results} == ids, "every frame has a result"
    # One refs partition, and one results partition (records keyed by the
    # source): the order read is the order sent.
    assert len({r.lineage.partition for r in results}) == 1
    offsets = [r.lineage.offset for r in results]
    inversions = sum(1 for a, b in itertools.pairwise(offsets) if b < a)
    assert inversions == 0, f"{inversions} results sent before an earlier frame's"
    ts = [r.ts for r in results]
    assert ts == sorted(ts)
    assert len(batches) >= 10
