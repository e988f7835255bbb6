"""`imgstream capture` of a real (generated) video into a running worker."""

from __future__ import annotations

import cv2
import numpy as np

from imgstream.producers.video.capture import Sampler
from imgstream.schema.records import Result


def make_video(path, seconds: float = 3.0, fps: int = 30) -> int:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    n = int(seconds * fps)
    for i in range(n):
        frame = np.full((240, 320, 3), (i * 3) % 256, np.uint8)
        cv2.putText(frame, str(i), (60, 140), cv2.FONT_HERSHEY_SIMPLEX, 3, (0, 0, 255), 5)
        writer.write(frame)
    writer.release()
    return n


def test_sampler_keeps_one_frame_per_interval() -> None:
    s = Sampler(5.0)
    kept = [i for i in range(90) if s.keep(i / 30.0)]
    assert kept == list(range(0, 90, 6))
    slow = Sampler(5.0)
    assert [slow.keep(t) for t in (0.0, 0.1, 1.05, 1.1, 1.25)] == [True, False, True, False, True]


def test_capture_into_a_running_worker(topics, worker, run_cli, tmp_path) -> None:
    video = tmp_path / "clip.avi"
    make_video(video, seconds=3.0, fps=30)
    store = tmp_path / "frames"
    store.mkdir()
    w = worker(tmp_path / "out", store, "--max-wait", "0.1")
    proc = run_cli(
        "capture",
        str(video),
        "--fps",
        "5",
        "--source",
        "cam1",
        "--store",
        str(store),
        "--bootstrap",
        topics.bootstrap,
        "--topic",
        topics.refs,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    frames = sorted((store / "cam1").glob("*.jpg"))
    assert 14 <= len(frames) <= 16, proc.stdout  # fps x duration, within one frame
    assert f"captured {len(frames)} frames" in proc.stdout
    ids = {f"cam1-{p.stem}" for p in frames}
    topics.stream().wait_for(ids, timeout_s=60)
    assert w.stop() == 0
    records = topics.read_all().records
    results = [r for r in records if isinstance(r, Result)]
    assert sorted(r.id for r in results) == sorted(ids), "missing or duplicated frames"
    ts = [r.ts for r in results]
    assert ts == sorted(ts), "results of one source are out of order"
    assert all(r.source == "cam1" for r in results)


def test_capture_counts_stored_and_skipped_frames(tmp_path) -> None:
    from imgstream.clock import SystemClock
    from imgstream.producers.video.capture import capture

    video = tmp_path / "clip.avi"
    n = make_video(video, seconds=2.0, fps=30)
    events: list[str] = []
    refs = []
    stats = capture(
        str(video),
        "door",
        str(tmp_path / "store"),
        refs.append,
        SystemClock(),
        fps=10,
        on_event=events.append,
    )
    assert stats.read == n and stats.stored == len(refs) == events.count("stored") == 20
    assert events.count("skipped") == n - 20
    assert [r.ts for r in refs] == sorted(r.ts for r in refs)
    limited = capture(
        str(video),
        "door",
        str(tmp_path / "store2"),
        lambda r: None,
        SystemClock(),
        fps=10,
        max_frames=5,
    )
    assert limited.stored == 5


def test_frames_latest_is_for_live_sources(run_cli, tmp_path) -> None:
    video = tmp_path / "clip.avi"
    make_video(video, seconds=0.2)
    proc = run_cli("capture", str(video), "--frames", "latest", "--bootstrap", "127.0.0.1:9")
    assert proc.returncode == 2, proc.stderr
    assert "--frames latest is for live sources" in proc.stderr
