"""Tiling geometry (property-based): exact cover, halos as asked, crop-back."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from imgstream.tiling import grid, tile_from_meta, tile_id, tile_index, tile_meta, tile_parent


@settings(deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(4, 120), st.integers(0, 40))
def test_cores_cover_exactly_and_halos_are_as_asked(width, height, size, overlap) -> None:
    tiles = grid(width, height, size, overlap)
    cover = np.zeros((height, width), np.int32)
    for t in tiles:
        c, h = t.core, t.halo
        cover[c.y : c.y + c.h, c.x : c.x + c.w] += 1
        assert 0 < c.w <= size and 0 < c.h <= size
        assert h.x == max(0, c.x - overlap) and h.y == max(0, c.y - overlap)
        assert h.x + h.w == min(width, c.x + c.w + overlap)
        assert h.y + h.h == min(height, c.y + c.h + overlap)
        assert tile_from_meta(tile_meta("p", t, width, height, overlap, "u")) == t
    assert (cover == 1).all()
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert len(tiles) == tiles[0].rows * tiles[0].cols


@settings(deadline=None)
@given(st.integers(1, 200), st.integers(1, 200), st.integers(4, 64), st.integers(0, 20))
def test_cropping_the_halo_back_gives_the_core(width, height, size, overlap) -> None:
    img = np.arange(width * height, dtype=np.int64).reshape(height, width)
    for t in grid(width, height, size, overlap):
        h, c = t.halo, t.core
        halo_pixels = img[h.y : h.y + h.h, h.x : h.x + h.w]
        k = t.core_in_halo()
        cropped = halo_pixels[k.y : k.y + k.h, k.x : k.x + k.w]
        assert np.array_equal(cropped, img[c.y : c.y + c.h, c.x : c.x + c.w])


def test_tile_ids_and_indexes_follow_the_grid() -> None:
    tiles = grid(250, 130, 100, 5)
    metas = [tile_meta("big", t, 250, 130, 5, "/big.png") for t in tiles]
    assert [tile_index(m) for m in metas] == [t.index for t in tiles] == list(range(6))
    assert tile_id("big", 1, 2) == "big~r1c2"
    assert len({tile_id("big", t.row, t.col) for t in tiles}) == len(tiles)
    assert tile_parent(metas[0]) == "big"
    assert tile_parent(None) is None
    assert tile_parent({"parent": 7}) is None
