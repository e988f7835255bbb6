"""SafeStore.read cannot be raced out of its root by swapping a directory for a symlink.

Another process flips ``root/sub`` between a real directory and a symlink to a
directory outside the root as fast as it can, while this process reads
``sub/img.png`` in a loop. A check-then-open loader returns the outside
file's bytes here (119 times in 4 s before the fix) and leaks raw
``OSError``; the descriptor walk must only ever return the inside bytes or
raise ``ImageError``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from imgstream.errors import ImageError
from imgstream.io.storage import SafeStore

SWAPPER = """
import os, sys
root, outside = sys.argv[1], sys.argv[2]
sub, aside = os.path.join(root, "sub"), os.path.join(root, "sub.dir")
print("ready", flush=True)
while True:
    os.rename(sub, aside)
    os.symlink(outside, sub)
    os.unlink(sub)
    os.rename(aside, sub)
"""


def race(root: Path, outside: Path, seconds: float) -> Counter[str]:
    """Read ``sub/img.png`` for ``seconds`` while another process swaps ``sub``."""
    store = SafeStore([root])
    counts: Counter[str] = Counter()
    with subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(root), str(outside)], stdout=subprocess.PIPE
    ) as swapper:
        assert swapper.stdout is not None
        try:
            assert swapper.stdout.readline() == b"ready\n"
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    data = store.read("sub/img.png").data
                except ImageError as exc:
                    counts[exc.type] += 1
                else:
                    counts["inside" if data == b"inside" else "OUTSIDE"] += 1
        finally:
            swapper.kill()
    return counts


def test_swapping_a_directory_for_a_symlink_never_escapes(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "img.png").write_bytes(b"inside")
    (outside / "img.png").write_bytes(b"outside")
    seconds = float(os.environ.get("IMGSTREAM_RACE_SECONDS", "3"))
    counts = race(root, outside, seconds)
    print(dict(counts))
    assert counts["OUTSIDE"] == 0, counts
    # The race really ran: reads saw the directory and also saw it swapped.
    assert counts["inside"] > 0, counts
    assert counts["forbidden"] + counts["not_found"] > 0, counts
