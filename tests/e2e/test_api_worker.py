"""The Python API equals the worker: `imgstream run` and Pipeline.parse(spec).apply(img)
give the same pixels for the same image and spec, and process_folder the same files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np

import imgstream
from tests.helpers import cli

SPEC = "gray|blur:k=3|sharpen"


def test_api_output_equals_imgstream_run(photos: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for p in photos[:3]:
        shutil.copy(p, folder / p.name)
    out = tmp_path / "out"
    proc = cli("run", str(folder), "--out", str(out), "--ops", SPEC, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    results = {Path(r["uri"]).name: r for r in records if r["kind"] == "result"}
    assert set(results) == {p.name for p in photos[:3]}

    pipeline = imgstream.Pipeline.parse(SPEC)
    for name, record in results.items():
        assert record["pipeline_hash"] == pipeline.hash
        assert record["pipeline"] == pipeline.canonical
        stored = cv2.imread(record["output_uri"], cv2.IMREAD_UNCHANGED)
        mine = pipeline.apply(imgstream.read_image(folder / name))
        assert stored.dtype == mine.dtype and np.array_equal(stored, mine), name

    again = tmp_path / "api"
    done = list(imgstream.process_folder(folder, pipeline, out=again))
    assert all(r.ok for r in done)
    for r in done:
        record = results[Path(r.path).name]
        assert r.id == record["id"]
        assert r.output_path is not None
        worker = Path(record["output_uri"])
        assert Path(r.output_path).relative_to(again) == worker.relative_to(out)
        assert Path(r.output_path).read_bytes() == worker.read_bytes()
