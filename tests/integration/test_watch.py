"""`imgstream produce DIR --watch` on real files and the real broker."""

from __future__ import annotations

import os
import shutil
import time

from imgstream.producers.files import file_id

#: Seconds a file must stop changing before the watcher produces it.
SETTLE_S = 1.5
#: How often the growing file gets a new chunk: well under SETTLE_S, so it never
#: looks settled while it grows, even on a busy machine.
WRITE_EVERY_S = 0.1


def watch(background, topics, folder, state):
    """A watcher on ``folder`` producing to the test's refs topic."""
    return background(
        "produce",
        str(folder),
        "--watch",
        "--settle",
        str(SETTLE_S),
        "--state",
        str(state),
        "--bootstrap",
        topics.bootstrap,
        "--topic",
        topics.refs,
        name="watch",
    )


def test_watch_produces_complete_files_once(topics, background, tmp_path, photos) -> None:
    folder, state = tmp_path / "drop", tmp_path / "state.json"
    folder.mkdir()
    shutil.copy(photos[0], folder / "first.jpg")
    proc = watch(background, topics, folder, state)
    proc.wait_for_output("produced", timeout=30)
    # A file written slowly is not produced while it grows. It keeps growing
    # until a complete file dropped after it has been produced: that proves the
    # watcher listed the folder (more than SETTLE_S) while the slow file grew.
    data = photos[1].read_bytes()
    slow = folder / "slow.jpg"
    marker_seen = False
    with open(slow, "wb") as fh:
        fh.write(data[:1024])
        fh.flush()
        shutil.copy(photos[2], folder / "marker.jpg")
        deadline = time.monotonic() + 30
        written = 1024
        while not marker_seen:
            assert time.monotonic() < deadline, proc.output()
            assert written < len(data), "the slow file ran out of bytes before the marker"
            time.sleep(WRITE_EVERY_S)
            fh.write(data[written : written + 256])
            fh.flush()
            written += 256
            marker_seen = "marker.jpg" in proc.output()
        assert "slow.jpg" not in proc.output(), "a growing file was produced"
        fh.write(data[written:])
    proc.wait_for_output("slow.jpg", timeout=30)
    assert proc.stop() == 0
    refs = topics.read_refs()
    by_name = {os.path.basename(r.uri): r for r in refs}
    assert sorted(by_name) == ["first.jpg", "marker.jpg", "slow.jpg"]
    assert len(refs) == 3, [r.uri for r in refs]
    # The one ref of the slow file is of its final, complete version.
    assert slow.read_bytes() == data
    assert by_name["slow.jpg"].id == file_id(str(slow), os.stat(slow))
    # A restart does not produce the same files again: a new file dropped after
    # the restart is produced, and it is the only new ref.
    proc = watch(background, topics, folder, state)
    shutil.copy(photos[3], folder / "fourth.png")
    proc.wait_for_output("fourth.png", timeout=30)
    assert proc.stop() == 0
    again = topics.read_refs()
    new = [os.path.basename(r.uri) for r in again if r.id not in {x.id for x in refs}]
    assert new == ["fourth.png"] and len(again) == 4
