"""`imgstream run` with stateful operations: gate and dedupe store only the frames they keep."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2

from tests.helpers import cli
from tests.integration.test_motion_state import video  # noqa: F401  (the fixture)
from tests.unit.test_motion import reference_motion


def _frames(video_path: Path, folder: Path, start: int, n: int, step: int = 2) -> list[Path]:
    """``n`` frames of the video from ``start``, every ``step``-th, as JPEG files in order."""
    folder.mkdir(parents=True)
    cap = cv2.VideoCapture(str(video_path))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    paths = []
    index = 0
    while len(paths) < n:
        ok, frame = cap.read()
        assert ok, "the video ended"
        if index % step == 0:
            path = folder / f"{len(paths):04d}.jpg"
            cv2.imwrite(str(path), frame)
            paths.append(path)
        index += 1
    cap.release()
    return paths


def _records(out: Path) -> list[dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "result"]


def test_gate_stores_only_frames_with_motion_and_equals_one_pass(tmp_path, video) -> None:  # noqa: F811
    sources = {
        "left": _frames(video, tmp_path / "in" / "left", 0, 20),
        "right": _frames(video, tmp_path / "in" / "right", 400, 20),
    }
    out = tmp_path / "out"
    done = cli("run", str(tmp_path / "in"), "--out", str(out), "--ops",
               "motion:action=gate", "--workers", "2", "--max-batch", "4", timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    results = {Path(r["uri"]).name + r["source"]: r for r in _records(out)}
    assert len(results) == 40
    written = set()
    for source, paths in sources.items():
        want = reference_motion([cv2.imread(str(p)) for p in paths])
        for path, motion in zip(paths, want, strict=True):
            r = results[path.name + source]
            got = r["outputs"]["motion"]
            assert {k: got[k] for k in ("first", "ratio", "boxes")} == motion, path
            assert got["kept"] == bool(motion["boxes"])
            assert (r["output_uri"] is not None) == got["kept"]
            if got["kept"]:
                written.add(Path(r["output_uri"]))
    stored = {p for p in out.rglob("*.png")}
    assert stored == written and written, "gate stores exactly the frames it keeps"


def test_dedupe_stores_no_image_for_a_repeated_frame(tmp_path, video) -> None:  # noqa: F811
    paths = _frames(video, tmp_path / "in" / "cam", 100, 6, step=25)
    shutil.copy(paths[2], tmp_path / "in" / "cam" / "0002b.jpg")  # the same frame again
    out = tmp_path / "out"
    done = cli("run", str(tmp_path / "in"), "--out", str(out), "--ops", "dedupe", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    results = {Path(r["uri"]).name: r for r in _records(out)}
    assert results["0002b.jpg"]["outputs"]["dedupe"]["duplicate"] is True
    assert results["0002b.jpg"]["output_uri"] is None
    kept = [r for r in results.values() if r["outputs"]["dedupe"]["kept"]]
    assert len(kept) == len(list(out.rglob("*.png"))) == len(results) - 1
