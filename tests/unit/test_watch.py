"""Watch mode's pure parts: a file is produced once it stops changing; state persists."""

from __future__ import annotations

from imgstream.producers.watch import Settler, State


def test_a_growing_file_waits_until_it_settles() -> None:
    s = Settler(1.0)
    assert s.ready({"a": (10, 1)}, now=0.0) == []
    assert s.ready({"a": (20, 2)}, now=0.5) == []  # still growing
    assert s.ready({"a": (20, 2)}, now=1.0) == []
    assert s.ready({"a": (20, 2)}, now=1.6) == ["a"]
    assert s.ready({"a": (20, 2)}, now=5.0) == []  # once
    assert s.ready({"a": (30, 3)}, now=6.0) == []  # a new version starts over
    assert s.ready({"a": (30, 3)}, now=7.1) == ["a"]


def test_empty_files_are_not_ready() -> None:
    s = Settler(0.0)
    s.ready({"e": (0, 1)}, now=0)
    assert s.ready({"e": (0, 1)}, now=10) == []


def test_state_survives_a_restart(tmp_path) -> None:
    path = str(tmp_path / "state.json")
    state = State(path)
    state.add(["a", "b"])
    assert "a" in State(path) and "c" not in State(path)
