"""Decoding with limits: formats, truncation, bombs; and the gray operation."""

from __future__ import annotations

import resource
import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from imgstream.errors import DECODE_ERROR, TOO_LARGE, UNSUPPORTED_FORMAT, ImageError
from imgstream.io.imaging import decode, encode, encode_params, header_size, sniff
from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec

GRAY = parse_spec("gray", build_registry())


def error_type(data: bytes, **kw) -> str:
    with pytest.raises(ImageError) as info:
        decode(data, **kw)
    return info.value.type


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w×h pixels (the pixel data is a stub)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)


def test_decodes_exactly_like_imread(photos) -> None:
    for path in photos:
        expected = cv2.imread(str(path))
        got = decode(path.read_bytes()).image
        assert np.array_equal(got, expected), path.name


def test_header_sizes_match_the_decoded_images(photos) -> None:
    for path in photos:
        data = path.read_bytes()
        h, w = cv2.imread(str(path)).shape[:2]
        assert header_size(data, sniff(data)) == (w, h)


def test_other_formats_have_header_sizes() -> None:
    img = np.zeros((37, 53, 3), np.uint8)
    for ext in (".bmp", ".tiff", ".webp", ".png"):
        data = encode(img, ext[1:], [])
        assert header_size(data, sniff(data)) == (53, 37), ext


def test_os2_bmp_has_16_bit_sizes() -> None:
    # BITMAPCOREHEADER (12 bytes): width and height are 16-bit. Read as the
    # 32-bit fields of the Windows header, 5x3 became 196613x1572865: too_large.
    w, h = 5, 3
    rows = bytes(range(16)) * h  # 3 bytes a pixel, rows padded to a multiple of 4
    info = struct.pack("<IHHHH", 12, w, h, 1, 24)
    data = b"BM" + struct.pack("<IHHI", 26 + len(rows), 0, 0, 26) + info + rows
    assert header_size(data, "bmp") == (w, h)
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(decode(data).image, expected)


def test_non_images_are_unsupported() -> None:
    assert error_type(b"hello, world") == UNSUPPORTED_FORMAT
    assert error_type(b"") == UNSUPPORTED_FORMAT
    assert error_type(b"%PDF-1.4 ...") == UNSUPPORTED_FORMAT


def test_truncated_and_corrupt_files_are_decode_errors(photos) -> None:
    jpeg = next(p for p in photos if p.suffix == ".jpg").read_bytes()
    png = next(p for p in photos if p.suffix == ".png").read_bytes()
    assert error_type(jpeg[: len(jpeg) // 2]) == DECODE_ERROR
    assert error_type(jpeg[:300]) == DECODE_ERROR
    assert error_type(png[: len(png) // 2]) == DECODE_ERROR
    assert error_type(b"\xff\xd8\xff\xe0" + b"\x00" * 100) == DECODE_ERROR
    assert error_type(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40) == DECODE_ERROR


def test_decompression_bomb_is_refused_fast_and_small() -> None:
    bomb = png_bomb(100_000, 100_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    assert error_type(bomb) == TOO_LARGE
    assert time.perf_counter() - started < 0.1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_jpeg_bomb_header_is_refused(photos) -> None:
    data = bytearray(next(p for p in photos if p.suffix == ".jpg").read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    assert error_type(bytes(data)) == TOO_LARGE


def test_opencv_backstop_refuses_what_the_header_check_lets_through() -> None:
    # Past our own limit check, OpenCV's OPENCV_IO_MAX_IMAGE_PIXELS still refuses.
    started = time.perf_counter()
    assert error_type(png_bomb(40_000, 40_000), max_pixels=10**12) == DECODE_ERROR
    assert time.perf_counter() - started < 1.0


def test_gray_equals_opencv_on_real_photos(photos) -> None:
    for path in photos:
        img = cv2.imread(str(path))
        out, _ = GRAY.run(img)
        assert np.array_equal(out, cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)), path.name


@pytest.mark.parametrize(
    ("bgr", "luma"),
    [
        ((0, 0, 0), 0),
        ((255, 255, 255), 255),
        ((0, 0, 255), 76),  # red: 0.299 * 255 = 76.2
        ((0, 255, 0), 150),  # green: 0.587 * 255 = 149.7
        ((255, 0, 0), 29),  # blue: 0.114 * 255 = 29.07
        ((128, 128, 128), 128),
    ],
)
def test_gray_is_bt601_without_offset_on_pure_colours(bgr, luma) -> None:
    img = np.full((4, 4, 3), bgr, np.uint8)
    out, _ = GRAY.run(img)
    assert out.dtype == np.uint8 and out.shape == (4, 4)
    assert (out == luma).all()
    b, g, r = bgr
    assert abs(int(out[0, 0]) - (0.299 * r + 0.587 * g + 0.114 * b)) <= 0.5


def test_gray_policy_for_gray_alpha_and_16_bit() -> None:
    rng = np.random.default_rng(1)
    g = rng.integers(0, 256, (8, 9), dtype=np.uint8)
    assert GRAY.run(g)[0] is g
    bgra = rng.integers(0, 256, (8, 9, 4), dtype=np.uint8)
    assert np.array_equal(GRAY.run(bgra)[0], cv2.cvtColor(bgra[:, :, :3], cv2.COLOR_BGR2GRAY))
    deep = rng.integers(0, 65536, (8, 9, 3), dtype=np.uint16)
    expected = cv2.cvtColor((deep >> 8).astype(np.uint8), cv2.COLOR_BGR2GRAY)
    assert np.array_equal(GRAY.run(deep)[0], expected)


def test_png_output_is_lossless() -> None:
    img = np.random.default_rng(2).integers(0, 256, (30, 40), dtype=np.uint8)
    data = encode(img, "png", encode_params("png"))
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), img)


def _exif_app1(orientation: int) -> bytes:
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied_like_imread(photos, tmp_path, orientation) -> None:
    jpeg = next(p for p in photos if p.suffix == ".jpg").read_bytes()
    rotated = jpeg[:2] + _exif_app1(orientation) + jpeg[2:]
    path = tmp_path / "rotated.jpg"
    path.write_bytes(rotated)
    expected = cv2.imread(str(path))
    got = decode(rotated).image
    assert got.shape == expected.shape and np.array_equal(got, expected)


@pytest.mark.parametrize(
    "params",
    [
        [cv2.IMWRITE_JPEG_QUALITY, 75],
        [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
        [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
        [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422],
        [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411],
    ],
)
def test_fast_jpeg_decoder_gives_opencvs_pixels(photos, tmp_path, params) -> None:
    for photo in photos:
        img = cv2.imread(str(photo))
        for variant in (img, cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), img[:, 1:-2]):
            _ok, buf = cv2.imencode(".jpg", variant, params)
            data = bytes(buf)
            expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert np.array_equal(decode(data).image, expected), (photo.name, params)


@pytest.mark.parametrize("shape", [(31, 17), (31, 17, 1), (31, 17, 3), (31, 17, 4), (1, 1, 3)])
def test_fast_png_round_trips_exactly(shape) -> None:
    img = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    for level in (0, 1, 3):
        data = encode(img, "png", encode_params("png", png_level=level))
        back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(back.reshape(img.shape), img)


def test_fast_png_of_real_photos_decodes_to_the_same_pixels(photos) -> None:
    for path in photos:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        data = encode(img, "png", encode_params("png"))
        assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), -1), img), path.name


def test_sixteen_bit_png_goes_through_opencv() -> None:
    img = np.random.default_rng(4).integers(0, 65536, (9, 7), dtype=np.uint16)
    data = encode(img, "png", encode_params("png"))
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), -1), img)


def test_damaged_jpeg_decodes_as_opencv_recovers_it(photos) -> None:
    data = bytearray(next(p for p in photos if p.suffix == ".jpg").read_bytes())
    for k in range(len(data) // 2, len(data) // 2 + 40):
        data[k] = (data[k] * 7 + 3) % 256
    expected = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)
    assert expected is not None
    assert np.array_equal(decode(bytes(data)).image, expected)


@pytest.mark.parametrize("quality", [80, 101], ids=["lossy", "lossless"])
def test_webp_chunk_that_is_not_what_its_name_says_is_damaged_not_large(quality) -> None:
    # Renamed VP8X, the first chunk's bytes were read as a 24-bit canvas size
    # and the file refused as too_large; libwebp refuses it as malformed.
    img = np.random.default_rng(3).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, quality])
    assert ok
    data = bytes(buf)
    assert header_size(data, "webp") == (30, 40)
    for name in (b"VP8X", b"VP8 ", b"VP8L"):
        renamed = data[:12] + name + data[16:]
        if renamed == data:
            continue
        assert header_size(renamed, "webp") is None, name
        assert error_type(renamed) == DECODE_ERROR, name
