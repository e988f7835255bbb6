"""Watch mode's pure parts: a file is produced once it stops changing; state persists.

Time is a number passed to ``Settler.ready``: the tests step it by hand and
never sleep.
"""

from __future__ import annotations

import json

from imgstream.producers.watch import Settler, State, list_files


def test_a_growing_file_waits_until_it_settles() -> None:
    s = Settler(1.0)
    assert s.ready({"a": (10, 1)}, now=0.0) == []
    assert s.ready({"a": (20, 2)}, now=0.5) == []  # still growing
    assert s.ready({"a": (20, 2)}, now=1.0) == []
    assert s.ready({"a": (20, 2)}, now=1.6) == ["a"]
    assert s.ready({"a": (20, 2)}, now=5.0) == []  # once
    assert s.ready({"a": (30, 3)}, now=6.0) == []  # a new version starts over
    assert s.ready({"a": (30, 3)}, now=7.1) == ["a"]


def test_settled_means_stable_for_the_whole_settle_time() -> None:
    s = Settler(2.0)
    assert s.ready({"a": (5, 1)}, now=10.0) == []
    assert s.ready({"a": (5, 1)}, now=11.999) == []
    assert s.ready({"a": (5, 1)}, now=12.0) == ["a"]  # exactly settle_s later
    # a change of mtime alone (same size, rewritten in place) also restarts the wait
    t = Settler(2.0)
    t.ready({"b": (5, 1)}, now=0.0)
    assert t.ready({"b": (5, 2)}, now=1.9) == []
    assert t.ready({"b": (5, 2)}, now=3.8) == []
    assert t.ready({"b": (5, 2)}, now=3.9) == ["b"]


def test_files_settle_independently_and_come_sorted() -> None:
    s = Settler(1.0)
    s.ready({"c": (1, 1), "a": (1, 1)}, now=0.0)
    assert s.ready({"c": (1, 1), "a": (1, 1), "b": (1, 1)}, now=0.5) == []
    assert s.ready({"c": (1, 1), "a": (1, 1), "b": (1, 1)}, now=1.0) == ["a", "c"]
    assert s.ready({"c": (1, 1), "a": (1, 1), "b": (1, 1)}, now=1.5) == ["b"]


def test_a_removed_file_is_forgotten() -> None:
    s = Settler(1.0)
    s.ready({"a": (1, 1)}, now=0.0)
    assert s.ready({}, now=0.9) == []
    # back with the same stamp: its clock starts again from when it reappeared
    assert s.ready({"a": (1, 1)}, now=1.0) == []
    assert s.ready({"a": (1, 1)}, now=1.9) == []
    assert s.ready({"a": (1, 1)}, now=2.0) == ["a"]


def test_empty_files_are_not_ready() -> None:
    s = Settler(0.0)
    s.ready({"e": (0, 1)}, now=0)
    assert s.ready({"e": (0, 1)}, now=10) == []
    assert s.ready({"e": (7, 2)}, now=11) == []
    assert s.ready({"e": (7, 2)}, now=11) == ["e"]  # settle 0: stable across two listings


def test_state_survives_a_restart(tmp_path) -> None:
    path = tmp_path / "state.json"
    state = State(str(path))
    state.add(["b", "a"])
    state.add(["c"])
    assert "a" in State(str(path)) and "c" in State(str(path)) and "d" not in State(str(path))
    assert json.loads(path.read_text()) == {"produced": ["a", "b", "c"]}


def test_list_files_skips_hidden_files_and_directories(tmp_path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x" * 3)
    (tmp_path / ".partial.jpg").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "b.jpg").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(b"xy")
    listing = list_files([str(tmp_path)])
    assert {k: v[0] for k, v in listing.items()} == {
        str(tmp_path / "a.jpg"): 3,
        str(tmp_path / "sub" / "c.jpg"): 2,
    }
