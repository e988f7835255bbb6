"""Tiling geometry (property-based): exact cover, halos as asked, crop-back."""

from __future__ import annotations

import numpy as np
import pytest
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


def _meta(**changes: object) -> dict:
    """A valid ``tile`` field (tile r0c1 of a 2 x 3 grid), with ``changes`` applied."""
    [t] = [t for t in grid(250, 130, 100, 5) if (t.row, t.col) == (0, 1)]
    meta = tile_meta("big", t, 250, 130, 5, "/big.png")
    for name, value in changes.items():
        if value is DROP:
            del meta[name]
        else:
            meta[name] = value
    return meta


DROP = object()

#: Every way a ``tile`` field seen on the wire has been, or could be, malformed.
BAD_TILES = {
    "not an object (list)": [1, 2, 3],
    "not an object (string)": "big",
    "not an object (number)": 5,
    "empty object": {},
    "parent missing": _meta(parent=DROP),
    "parent not a string": _meta(parent=7),
    "parent empty": _meta(parent=""),
    "parent too long": _meta(parent="p" * 5000),
    "parent_uri not a string": _meta(parent_uri=["x"]),
    "rows missing": _meta(rows=DROP),
    "rows a word": _meta(rows="x"),
    "rows a numeral string": _meta(rows="2"),
    "rows null": _meta(rows=None),
    "rows a float": _meta(rows=2.0),
    "rows a bool": _meta(rows=True),
    "rows zero": _meta(rows=0),
    "rows negative": _meta(rows=-2),
    "rows huge": _meta(rows=10**30),
    "cols huge": _meta(cols=2**63),
    "cols a list": _meta(cols=[3]),
    "row negative": _meta(row=-1),
    "col past the grid": _meta(col=3),
    "row past the grid": _meta(row=2),
    "width zero": _meta(width=0),
    "width a string": _meta(width="250"),
    "height missing": _meta(height=DROP),
    "more rows than pixels": _meta(height=1),
    "overlap negative": _meta(overlap=-1),
    "overlap a string": _meta(overlap="5"),
    "core missing": _meta(core=DROP),
    "core three numbers": _meta(core=[100, 0, 100]),
    "core a string": _meta(core="0,0,1,1"),
    "core with a float": _meta(core=[100, 0, 100.5, 100]),
    "core empty box": _meta(core=[100, 0, 0, 100]),
    "core outside its halo": _meta(core=[0, 0, 100, 100]),
    "halo outside the image": _meta(halo=[95, 0, 1000, 105], core=[100, 0, 100, 100]),
    "halo at a negative x": _meta(halo=[-5, 0, 210, 105]),
}


@pytest.mark.parametrize("meta", BAD_TILES.values(), ids=BAD_TILES.keys())
def test_every_malformed_tile_field_is_a_value_error_naming_it(meta) -> None:
    with pytest.raises(ValueError, match=r"tile|parent|row|col|width|height|core|halo|overlap"):
        tile_from_meta(meta)


def test_a_valid_tile_field_passes_with_its_optional_fields_absent() -> None:
    t = tile_from_meta(_meta(overlap=DROP, parent_uri=DROP))
    assert (t.row, t.col, t.rows, t.cols) == (0, 1, 2, 3)
    assert tile_from_meta(_meta(parent_uri=None)) == t
