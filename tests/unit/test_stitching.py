"""Tiles processed with their halo and cropped back fuse into the whole-image result.

The rule: for an operation chain with footprint F (the sum of its radii), the
fused result equals the whole-image result when overlap >= F. Operations that
need the whole image (histograms, hysteresis, geometry) have no footprint and
are refused on tiles.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec
from imgstream.tiling import TileView, grid

REG = build_registry()


def fused(img: np.ndarray, spec: str, tile: int, overlap: int) -> np.ndarray:
    pipeline = parse_spec(spec, REG)
    out = None
    for t in grid(img.shape[1], img.shape[0], tile, overlap):
        h = t.halo
        piece, _ = pipeline.run(
            img[h.y : h.y + h.h, h.x : h.x + h.w].copy(), TileView(t.core_in_halo(), h.x, h.y)
        )
        k = t.core_in_halo()
        core = piece[k.y : k.y + k.h, k.x : k.x + k.w]
        if out is None:
            out = np.zeros((img.shape[0], img.shape[1], *core.shape[2:]), core.dtype)
        c = t.core
        out[c.y : c.y + c.h, c.x : c.x + c.w] = core
    assert out is not None
    return out


@pytest.fixture(scope="module")
def photo(photos) -> np.ndarray:
    return cv2.imread(str(next(p for p in photos if p.name == "astronaut.jpg")))


@pytest.mark.parametrize(
    "spec",
    [
        "gray",
        "threshold:t=100",
        "gamma:g=2.2",
        "blur:k=5",
        "gray|blur:k=5",
        "median:k=5",
        "morph:op=open,k=3",
        "morph:op=dilate,k=5",
        "sobel:dx=1,dy=0,k=3",
        "laplacian:k=3",
        "sharpen:amount=1,sigma=1",
        "bilateral:d=9",
        "threshold:method=adaptive,block=11",
        "gray|blur:k=5|morph:op=close,k=3",
    ],
)
def test_fused_equals_whole_when_the_overlap_covers_the_footprint(photo, spec) -> None:
    pipeline = parse_spec(spec, REG)
    need = pipeline.footprint()
    assert need is not None
    whole, _ = pipeline.run(photo.copy())
    for tile in (100, 173):
        assert np.array_equal(fused(photo, spec, tile, need), whole), (spec, tile)


def test_too_small_an_overlap_shows_seams(photo) -> None:
    whole, _ = parse_spec("blur:k=9", REG).run(photo.copy())
    assert not np.array_equal(fused(photo, "blur:k=9", 100, 1), whole)


@pytest.mark.parametrize(
    "spec",
    [
        "equalize",
        "clahe",
        "threshold:method=otsu",
        "canny",
        "normalize",
        "kmeans",
        "resize:w=10",
        "rotate",
        "flip",
        "crop:x=1",
        "phash",
        "gray|equalize",
    ],
)
def test_whole_image_operations_have_no_footprint(spec) -> None:
    pipeline = parse_spec(spec, REG)
    assert pipeline.footprint() is None
    assert pipeline.whole_image_steps()


def test_detections_are_reported_once_in_parent_coordinates(photo) -> None:
    whole = parse_spec("faces", REG).run(photo.copy())[1]["faces"]["boxes"]
    assert whole
    found = []
    pipeline = parse_spec("faces", REG)
    for t in grid(photo.shape[1], photo.shape[0], 256, 128):
        h = t.halo
        _, data = pipeline.run(
            photo[h.y : h.y + h.h, h.x : h.x + h.w].copy(), TileView(t.core_in_halo(), h.x, h.y)
        )
        found += data["faces"]["boxes"]
    # the face is found exactly once (by the one tile whose core holds it),
    # near where the whole image has it
    assert len(whole) == 1
    assert len(found) == 1
    x, y, w, h = whole[0]
    fx, fy, _, _ = found[0]
    assert abs(fx - x) < w / 2 and abs(fy - y) < h / 2
