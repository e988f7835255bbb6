"""`imgstream run` as a user runs it: a subprocess, a folder of mixed files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from tests.helpers import cli


def _mixed_folder(photos: list[Path], root: Path) -> dict[str, str | None]:
    """Files by name -> expected failure type (None: a valid image)."""
    root.mkdir()
    expected: dict[str, str | None] = {}
    for p in photos:
        shutil.copy(p, root / p.name)
        expected[p.name] = None
    colour = cv2.imread(str(photos[0]))
    deep = (colour.astype(np.uint16) * 257 + 3).astype(np.uint16)
    cv2.imwrite(str(root / "deep16.png"), deep)
    expected["deep16.png"] = None
    sub = root / "nested"
    sub.mkdir()
    cv2.imwrite(str(sub / "small.bmp"), colour[:50, :70])
    expected["small.bmp"] = None
    jpeg = next(p for p in photos if p.suffix == ".jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    expected["truncated.jpg"] = "decode_error"
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    expected["corrupt.png"] = "decode_error"
    (root / "readme.txt").write_text("not an image\n")
    expected["readme.txt"] = "unsupported_format"
    (root / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "unsupported_format"
    return expected


def test_run_on_a_mixed_folder(photos, tmp_path) -> None:
    root = tmp_path / "mixed"
    expected = _mixed_folder(photos, root)
    out = tmp_path / "out"
    proc = cli(
        "run", str(root), "--out", str(out), "--workers", "2", "--max-wait", "0.2", timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "missing     0" in proc.stdout
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_name: dict[str, dict] = {}
    for r in records:
        if r["kind"] in ("result", "failure"):
            by_name[Path(r["uri"]).name] = r
    assert set(by_name) == set(expected)
    for name, failure in expected.items():
        r = by_name[name]
        if failure is None:
            assert r["kind"] == "result", r
            reference = cv2.cvtColor(cv2.imread(r["uri"]), cv2.COLOR_BGR2GRAY)
            got = cv2.imread(r["output_uri"], cv2.IMREAD_UNCHANGED)
            assert np.array_equal(got, reference), name
            assert r["output_uri"].startswith(str(out / r["pipeline_hash"]))
        else:
            assert r["kind"] == "failure" and r["error"]["type"] == failure, r


def test_bad_flags_stop_at_start_up(tmp_path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, timeout=60)

    bad_ops = run("run", str(tmp_path), "--out", str(tmp_path / "o"), "--ops", "grey")
    assert bad_ops.returncode == 2
    assert "unknown operation 'grey'" in bad_ops.stderr and "gray" in bad_ops.stderr
    bad_batch = run(
        "work", "--bootstrap", "127.0.0.1:1", "--out", str(tmp_path), "--max-batch", "0"
    )
    assert bad_batch.returncode == 2 and "--max-batch" in bad_batch.stderr
    bad_fmt = run("work", "--bootstrap", "x:1", "--out", str(tmp_path), "--format", "gif")
    assert bad_fmt.returncode == 2 and "--format" in bad_fmt.stderr
    ops = run("ops")
    assert ops.returncode == 0 and "gray" in ops.stdout and "identity" in ops.stdout
