"""An image that kills its worker process never stops the partition or the group.

The crash is real: a plugin op (a made-up distribution installed beside
imgstream, as a user's would be) calls ``os.abort()`` on one marked image
(SIGABRT, no Python clean-up), as a segfault in a native decoder or a model
would. The image is tried at most ``--max-attempts`` (2) times across worker
lives, then dead-lettered as ``crashed``; every other image gets its result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from imgstream.schema.records import Failure, ImageRef, Result
from tests.fixtures.plugins import env_with, write_plugin
from tests.fixtures.processes import Background
from tests.helpers import wait_until

#: The marked image: a pixel value no other test image has in its corner.
MARK = 251
PLUGIN = """
import os

import imgstream


@imgstream.op("abort_on_mark")
def abort_on_mark(img, *, value: int = 251):
    \"\"\"Abort the process on an image whose top-left pixel is ``value`` (a crash).\"\"\"
    if int(img.reshape(-1)[0]) == value:
        os.abort()
    return img
"""
OPS = "abort_on_mark|gray"


@pytest.fixture
def abort_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a worker with the aborting plugin installed beside imgstream."""
    site = write_plugin(
        tmp_path / "site",
        "imgstream-abort-plugin",
        "1.0",
        {"imgstream_abort_plugin": PLUGIN},
        {"abort": "imgstream_abort_plugin"},
    )
    return {"PYTHONPATH": env_with(site)["PYTHONPATH"]}


def _images(root: Path, n: int = 10) -> tuple[list[Path], Path]:
    """``n`` images and one marked image (its first pixel is the mark)."""
    root.mkdir()
    rng = np.random.default_rng(5)
    paths = []
    for i in range(n):
        path = root / f"img{i:02d}.png"
        image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        image[0, 0, 0] = i  # never the mark
        cv2.imwrite(str(path), image)
        paths.append(path)
    marked = root / "img04-marked.png"
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image[0, 0, 0] = MARK
    cv2.imwrite(str(marked), image)
    return paths, marked


def test_run_finishes_with_one_crashed_failure(tmp_path, abort_env) -> None:
    paths, marked = _images(tmp_path / "in")
    out = tmp_path / "out"
    env = {**os.environ, **abort_env}
    done = _run(["run", str(tmp_path / "in"), "--out", str(out), "--ops", OPS], env)
    assert done.returncode == 0, done.stdout + done.stderr
    records = [_record(line) for line in (out / "results.jsonl").read_text().splitlines()]
    results = {r["uri"] for r in records if r["kind"] == "result"}
    failures = [r for r in records if r["kind"] == "failure"]
    assert results == {str(p) for p in paths}
    assert [(f["uri"], f["error"]["type"], f["attempts"]) for f in failures] == [
        (str(marked), "crashed", 2)
    ]
    assert done.stderr.count("died by SIGABRT") == 2  # restarted once per attempt, no more


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def _record(line: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(line)
    return record


@pytest.mark.kafka_only("a group of two on the real cluster (restarts wait out its session)")
def test_a_group_of_two_dead_letters_the_image_and_restarts_no_more_than_max_attempts(
    topics, background, tmp_path, abort_env
) -> None:
    paths, marked = _images(tmp_path / "in")
    now = int(time.time() * 1000)
    refs = [ImageRef(id=p.stem, uri=str(p), ts=now, source="cam") for p in [*paths, marked]]
    topics.produce(refs)
    root, out = tmp_path / "in", tmp_path / "out"

    def start(i: int) -> Background:
        args = topics.worker_args(out, root, "--ops", OPS, "--max-attempts", "2")
        return background(*args, name=f"worker{i}", env=abort_env)

    workers = [start(0), start(1)]
    restarts = [0, 0]
    stream = topics.stream()

    def all_settled() -> bool:
        for i, w in enumerate(workers):
            code = w.poll()
            if code is not None:
                assert code == -signal.SIGABRT, f"worker {i} exited {code}: {w.output()}"
                restarts[i] += 1
                workers[i] = start(i)  # the supervisor (compose, systemd, k8s) restarts it
        stream.poll(0.5)
        return {r.id for r in stream.records} >= {r.id for r in refs}

    wait_until(all_settled, 180, interval=0, what="a record for every ref")
    by_id = {r.id: r for r in stream.records}
    assert all(isinstance(by_id[p.stem], Result) for p in paths)
    crashed = by_id[marked.stem]
    assert isinstance(crashed, Failure) and crashed.error_type == "crashed"
    assert crashed.attempts == 2
    assert sum(restarts) == 2, restarts  # one death per attempt, none after
    assert max(restarts) <= 2
