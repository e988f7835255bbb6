"""The Huffman-only deflate coder (stream/_deflate.c) that PNG output uses for photos."""

from __future__ import annotations

import os
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgstream import imaging

try:
    from imgstream._deflate import huffman
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
    rows = imaging._png_rows(mask)
    assert huffman(rows) is None
    noise = np.random.default_rng(3).integers(0, 256, (480, 640), np.uint8)
    assert huffman(imaging._png_rows(noise)) is not None


def test_photos_take_the_fast_path_at_about_isals_size(photos) -> None:
    for path in photos:
        gray = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)
        rows = imaging._png_rows(gray)
        stream = imaging._zlib_stream(rows, 1)
        raw = huffman(rows)
        assert raw is not None and stream[2:-4] == raw, path.name
        assert zlib.decompress(stream) == bytes(rows)  # header and Adler-32 included
        assert len(stream) < 1.1 * len(zlib.compress(bytes(rows), 1)), path.name


def test_other_levels_use_lz77() -> None:
    rows = imaging._png_rows(np.random.default_rng(4).integers(0, 256, (64, 64), np.uint8))
    for level in (0, 2, 3):
        assert zlib.decompress(imaging._zlib_stream(rows, level)) == bytes(rows)
        assert imaging._zlib_stream(rows, level)[2:-4] != huffman(rows)
