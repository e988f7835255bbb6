"""Helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import subprocess
import sys


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``imgstream ARGS...`` in a subprocess, as a user would; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "imgstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
