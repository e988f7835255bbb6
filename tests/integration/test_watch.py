"""`imgstream produce DIR --watch` on real files and the real broker."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

from imgstream.codec import decode_ref
from imgstream.kafka_io import TopicReader


def refs_in(topics, expect: int, timeout: float = 20.0) -> list[str]:
    reader = TopicReader(topics.bootstrap, [topics.refs])
    ids: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ids += [decode_ref(m.value, 0).id for m in reader.poll(0.2)]
            if len(ids) >= expect:
                time.sleep(0.5)
                ids += [decode_ref(m.value, 0).id for m in reader.poll(0.2)]
                break
    finally:
        reader.close()
    return ids


def start(topics, folder, state):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imgstream.cli",
            "produce",
            str(folder),
            "--watch",
            "--settle",
            "0.6",
            "--state",
            str(state),
            "--bootstrap",
            topics.bootstrap,
            "--topic",
            topics.refs,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_watch_produces_complete_files_once(topics, tmp_path, photos) -> None:
    folder, state = tmp_path / "drop", tmp_path / "state.json"
    folder.mkdir()
    shutil.copy(photos[0], folder / "first.jpg")
    proc = start(topics, folder, state)
    try:
        assert len(refs_in(topics, 1)) == 1
        # a file written slowly is not produced while it grows
        data = photos[1].read_bytes()
        with open(folder / "slow.jpg", "wb") as fh:
            for i in range(0, len(data), len(data) // 5 + 1):
                fh.write(data[i : i + len(data) // 5 + 1])
                fh.flush()
                time.sleep(0.3)
                assert len(refs_in(topics, 2, timeout=0.3)) == 1
        shutil.copy(photos[2], folder / "third.png")
        ids = refs_in(topics, 3)
        assert len(ids) == 3 and len(set(ids)) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    # a restart does not produce the same files again
    proc = start(topics, folder, state)
    try:
        time.sleep(3)
        assert len(refs_in(topics, 4, timeout=2)) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
