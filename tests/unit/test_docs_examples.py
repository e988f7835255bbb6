"""Every ```python block of the documentation (docs/**/*.md, README.md) runs, as written.

Each block is one test, run from the repository root (the examples use
tests/data/photos) in a fresh namespace; a block that should not run is
written as ```text or ```sh.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    pages = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
    found = []
    for page in pages:
        for n, match in enumerate(BLOCK.finditer(page.read_text()), start=1):
            found.append((f"{page.relative_to(ROOT)}#{n}", match.group(1)))
    return found


BLOCKS = _blocks()


def test_the_python_api_guide_has_examples() -> None:
    assert sum(name.startswith("docs/how-to/python-api.md") for name, _ in BLOCKS) >= 4


@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[n for n, _ in BLOCKS])
def test_example_runs(code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})
