"""Partitioners: distribution, order per key, determinism."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from imgstream.partitioning import make_partitioner, partition_key
from imgstream.schema.records import ImageRef


def refs(n: int, **kw) -> list[ImageRef]:
    return [ImageRef(id=f"r{i}", uri=f"{i}.jpg", ts=i, **kw) for i in range(n)]


def test_sequential_is_round_robin_in_order() -> None:
    p = make_partitioner("sequential")
    got = [p.partition(r, 4) for r in refs(10)]
    assert got == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_random_is_seeded_and_spread() -> None:
    a = [make_partitioner("random", 7).partition(r, 4) for r in refs(1)]
    p1, p2 = make_partitioner("random", 7), make_partitioner("random", 7)
    assert [p1.partition(r, 4) for r in refs(200)] == [p2.partition(r, 4) for r in refs(200)]
    p3 = make_partitioner("random", 1)
    counts = Counter(p3.partition(r, 4) for r in refs(4000))
    assert all(800 < counts[p] < 1200 for p in range(4)), counts
    assert a


@given(st.lists(st.sampled_from(["cam1", "cam2", "cam3", "door"]), min_size=1, max_size=100))
def test_source_keeps_each_source_on_one_partition_in_order(sources) -> None:
    p = make_partitioner("source")
    seen: dict[str, int] = {}
    for i, s in enumerate(sources):
        part = p.partition(ImageRef(id=str(i), uri="x", ts=i, source=s), 3)
        assert seen.setdefault(s, part) == part


def test_size_groups_same_shapes() -> None:
    p = make_partitioner("size")
    a = ImageRef("a", "a", 0, meta={"width": 1920, "height": 1080})
    b = ImageRef("b", "b", 0, meta={"width": 1920, "height": 1080})
    assert p.partition(a, 8) == p.partition(b, 8)
    shapes = {
        p.partition(ImageRef(str(w), "x", 0, meta={"width": w, "height": 100}), 8)
        for w in range(100, 140)
    }
    assert len(shapes) > 4  # different shapes spread


def test_phash_buckets_near_duplicates_together() -> None:
    p = make_partitioner("phash")
    a = ImageRef("a", "a", 0, meta={"phash": "c3a5f0f00f0f1234"})
    b = ImageRef("b", "b", 0, meta={"phash": "c3a5f0f00f0f9999"})  # differs in high-frequency bits
    assert p.partition(a, 16) == p.partition(b, 16)


def test_parent_keeps_tiles_together_and_keys_by_parent() -> None:
    p = make_partitioner("parent")
    tiles = [ImageRef(f"big-{i}", "t", i, tile={"parent": "big"}) for i in range(20)]
    assert len({p.partition(t, 8) for t in tiles}) == 1
    assert partition_key(tiles[0]) == b"big"


def test_unknown_strategy_lists_the_valid_ones() -> None:
    import pytest

    from imgstream.errors import ConfigError

    with pytest.raises(ConfigError, match="valid: sequential, random, source, size, phash, parent"):
        make_partitioner("round-robin")
