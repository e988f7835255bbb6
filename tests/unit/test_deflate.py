"""The Huffman-only deflate coder (stream/_deflate.c) that PNG output uses for photos."""

from __future__ import annotations

import os
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from isal import isal_zlib

from imgstream import png

try:
    from imgstream._deflate import huffman, png_idat
except ImportError:  # pragma: no cover - only where the package was built without a compiler
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "imgstream._deflate was not built (no C compiler at install)", allow_module_level=True
    )

BLOCK = 64 * 1024


def inflate(raw: bytes) -> bytes:
    return zlib.decompress(raw, -15)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3 * BLOCK + 7))
def test_any_bytes_inflate_back(data: bytes) -> None:
    assert inflate(huffman(data, min_bits=0)) == data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"x",
        bytes(BLOCK),  # one symbol: the code is padded to two
        bytes(range(256)) * (BLOCK // 256) * 3,  # exactly three blocks, flat histogram
        np.random.default_rng(1).integers(0, 256, 5 * BLOCK + 3, dtype=np.uint8).tobytes(),
    ],
    ids=["empty", "one-byte", "one-symbol", "three-blocks", "noise"],
)
def test_edge_cases_inflate_back(data: bytes) -> None:
    assert inflate(huffman(data, min_bits=0)) == data


def test_skewed_histograms_keep_codes_within_deflates_limit() -> None:
    """Fibonacci frequencies make an unlimited Huffman code ~25 bits deep."""
    fib = [1, 2]
    while len(fib) < 26:
        fib.append(fib[-1] + fib[-2])
    data = b"".join(bytes([i]) * f for i, f in enumerate(fib))[:BLOCK]
    rng = np.random.default_rng(2)
    shuffled = rng.permutation(np.frombuffer(data, np.uint8)).tobytes()
    for sample in (data, shuffled):
        assert inflate(huffman(sample, min_bits=0)) == sample


def test_compressible_content_is_handed_back_to_lz77() -> None:
    mask = np.zeros((480, 640), np.uint8)
    cv2.circle(mask, (320, 240), 100, 255, 3)
    rows = png.filtered_rows(mask)
    assert huffman(rows) is None
    noise = np.random.default_rng(3).integers(0, 256, (480, 640), np.uint8)
    assert huffman(png.filtered_rows(noise)) is not None


def test_photos_take_the_fast_path_at_about_isals_size(photos) -> None:
    fast = 0
    for path in photos:
        bgr = cv2.imread(str(path))
        for img in (cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), bgr, bgr[7:-5, 3:-9]):
            rows = png.filtered_rows(img)  # numpy's SUB filter
            stream = png.zlib_stream(img, 1)
            raw = huffman(rows)
            assert zlib.decompress(stream) == bytes(rows)  # header and Adler-32 included
            if raw is not None:  # the C filter agrees with numpy's
                assert stream[2:-4] == raw, path.name
                assert len(stream) < 1.12 * len(isal_zlib.compress(rows, 1)), path.name
                fast += 1
    assert fast >= 2 * len(photos)


def test_gray_stored_as_colour_goes_to_lz77(photos) -> None:
    gray = cv2.cvtColor(cv2.imread(str(photos[0])), cv2.COLOR_BGR2GRAY)
    as_colour = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    assert huffman(png.filtered_rows(gray)) is not None
    assert huffman(png.filtered_rows(as_colour)) is None


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 40),  # PNG has no empty images
    st.integers(1, 40),
    st.sampled_from([1, 3, 4]),
    st.integers(0, 2**32 - 1),
)
def test_png_idat_of_any_image_inflates_to_the_filtered_rows(h, w, c, seed) -> None:
    img = np.random.default_rng(seed).integers(0, 256, (h + 2, w + 3, c), np.uint8)
    view = img[1 : 1 + h, 2 : 2 + w]  # strided rows
    rows, bpp = png.rows_of(view if c > 1 else view[:, :, 0])
    stream = png_idat(rows, bpp, min_bits=0)
    assert stream is not None
    assert zlib.decompress(stream) == bytes(png.filtered_rows(view if c > 1 else view[:, :, 0]))


@pytest.mark.parametrize("channels", [1, 3])
def test_flipped_and_cropped_views_encode_to_their_pixels(photos, channels) -> None:
    bgr = cv2.imread(str(photos[0]))
    img = bgr if channels == 3 else cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    for view in (img[::-1], img[:, ::-1], img[::-2, 5:-7], img[10:-3:3, ::-1]):
        data = png.encode_png(view)
        back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(back, view)


def test_png_idat_refuses_what_is_not_rows() -> None:
    with pytest.raises(ValueError, match="2-D"):
        png_idat(np.zeros((4, 4, 3), np.uint8), 3)
    with pytest.raises(ValueError, match="2-D"):
        png_idat(np.zeros((4, 10), np.uint8), 3)  # 10 bytes is not whole pixels
    with pytest.raises(ValueError, match="2-D"):
        png_idat(np.zeros((4, 8), np.uint8)[:, ::2], 1)  # bytes within a row strided


def test_other_levels_use_lz77() -> None:
    img = np.random.default_rng(4).integers(0, 256, (64, 64), np.uint8)
    rows = png.filtered_rows(img)
    for level in (0, 2, 3):
        assert zlib.decompress(png.zlib_stream(img, level)) == bytes(rows)
        assert png.zlib_stream(img, level)[2:-4] != huffman(rows)
