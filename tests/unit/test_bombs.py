"""Decompression bombs in every format we decode are refused from the header.

For each format, a small file that claims 12000x12000 pixels (or more) must
be ``too_large`` in well under 0.1 s, before OpenCV allocates anything, and a
normal small image of the same format must still decode to exactly what
``cv2.imdecode`` gives.
"""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgstream.errors import DECODE_ERROR, TOO_LARGE, UNSUPPORTED_FORMAT, ImageError
from imgstream.io.imaging import MAX_JPEG_SCANS, decode, header_size, sniff

BIG = 12000


def small_image() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def encoded(ext: str, img: np.ndarray | None = None, params: tuple[int, ...] = ()) -> bytes:
    img = small_image() if img is None else img
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok, ext
    return bytes(buf)


def hdr_bomb(w: int = BIG, h: int = BIG) -> bytes:
    """A real run-length Radiance HDR of w x h black pixels (about 9 MB at 12000^2)."""
    runs = b"".join(bytes((128 + n, 0)) for n in _runs(w))
    line = bytes((2, 2, w >> 8, w & 0xFF)) + runs * 4  # R, G, B, E: each run-length coded
    head = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {h} +X {w}\n".encode()
    return head + line * h


def _runs(n: int) -> list[int]:
    return [127] * (n // 127) + ([n % 127] if n % 127 else [])


def jp2_small() -> bytes:
    return encoded(".jp2")


def jp2_codestream(data: bytes) -> bytes:
    """The raw JPEG 2000 codestream held in a JP2 file's ``jp2c`` box."""
    at = data.find(b"jp2c")
    return data[at + 4 :]


def patch_siz(data: bytes, w: int, h: int) -> bytes:
    """Set Xsiz/Ysiz in the (first) SIZ segment and every ``ihdr`` box."""
    out = bytearray(data)
    siz = out.find(b"\xff\x4f\xff\x51")
    out[siz + 8 : siz + 16] = struct.pack(">II", w, h)
    ihdr = out.find(b"ihdr")
    if ihdr >= 0:
        out[ihdr + 4 : ihdr + 12] = struct.pack(">II", h, w)
    return bytes(out)


def j2k_tile_bomb() -> bytes:
    """A 255x255 codestream cut into one-pixel tiles: 65025 tiles of coding state."""
    data = bytearray(patch_siz(jp2_codestream(jp2_small()), 255, 255))
    siz = data.find(b"\xff\x4f\xff\x51")
    data[siz + 24 : siz + 32] = struct.pack(">II", 1, 1)
    return bytes(data)


def exr_header(w: int, h: int) -> bytes:
    """A scanline OpenEXR header (no pixel data) for a w x h half-float RGB image."""

    def attr(name: str, kind: str, value: bytes) -> bytes:
        return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value

    channels = b"".join(c + b"\0" + struct.pack("<iiii", 1, 0, 1, 1) for c in (b"B", b"G", b"R"))
    box = struct.pack("<iiii", 0, 0, w - 1, h - 1)
    return (
        b"v/1\x01"
        + struct.pack("<I", 2)
        + attr("channels", "chlist", channels + b"\0")
        + attr("compression", "compression", b"\x03")  # ZIP
        + attr("dataWindow", "box2i", box)
        + attr("displayWindow", "box2i", box)
        + attr("lineOrder", "lineOrder", b"\x00")
        + attr("pixelAspectRatio", "float", struct.pack("<f", 1.0))
        + attr("screenWindowCenter", "v2f", struct.pack("<ff", 0, 0))
        + attr("screenWindowWidth", "float", struct.pack("<f", 1.0))
        + b"\0"
        + b"\0" * 64
    )


def sunras_bomb() -> bytes:
    data = bytearray(encoded(".ras"))
    data[4:12] = struct.pack(">II", BIG, BIG)
    return bytes(data)


def tiff_tile_bomb() -> bytes:
    """A 16x16 TIFF whose tiles are declared 60000x60000 (libtiff allocates whole tiles)."""
    tags = [(256, 4, 16), (257, 4, 16), (258, 3, 8), (259, 3, 1), (262, 3, 1), (277, 3, 1)]
    tags += [(322, 4, 60000), (323, 4, 60000), (324, 4, 200), (325, 4, 16)]
    ifd = struct.pack("<H", len(tags))
    ifd += b"".join(struct.pack("<HHII", tag, typ, 1, value) for tag, typ, value in tags)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + b"\0" * 300


def png_bomb() -> bytes:
    ihdr = struct.pack(">IIBBBBB", BIG * 10, BIG * 10, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\0" * 4096)
    body = (
        struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )
    return b"\x89PNG\r\n\x1a\n" + chunk + body


BOMBS = {
    "hdr": hdr_bomb,
    "jp2": lambda: patch_siz(jp2_small(), BIG, BIG),
    "j2k": lambda: patch_siz(jp2_codestream(jp2_small()), BIG, BIG),
    "j2k-tiles": j2k_tile_bomb,
    "exr": lambda: exr_header(BIG, BIG),
    "ppm": lambda: f"P6\n{BIG} {BIG}\n255\n".encode() + b"\0" * 1000,
    "pgm-comment": lambda: f"P5\n# made by hand\n{BIG}\n{BIG}\n255\n".encode() + b"\0" * 1000,
    "pbm": lambda: f"P4\n{BIG} {BIG}\n".encode() + b"\0" * 1000,
    "pam": lambda: (
        f"P7\nWIDTH {BIG}\nHEIGHT {BIG}\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n".encode()
        + b"\0" * 1000
    ),
    "pfm": lambda: f"PF\n{BIG} {BIG}\n-1.0\n".encode() + b"\0" * 1000,
    "sunras": sunras_bomb,
    "tiff-tiles": tiff_tile_bomb,
    "png": png_bomb,
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bomb_is_too_large_before_decoding(name: str) -> None:
    bomb = BOMBS[name]()
    started = time.perf_counter()
    with pytest.raises(ImageError) as info:
        decode(bomb)
    elapsed = time.perf_counter() - started
    assert info.value.type == TOO_LARGE, info.value
    assert elapsed < 0.1, f"{name}: {elapsed:.3f} s"


def test_real_hdr_bomb_is_small_on_disk() -> None:
    bomb = hdr_bomb()
    assert len(bomb) < 10_000_000  # 9.2 MB claiming 144 Mpx
    assert header_size(bomb, sniff(bomb)) == (BIG, BIG)


def test_jpeg2000_with_many_components_is_refused() -> None:
    data = bytearray(jp2_codestream(jp2_small()))
    siz = data.find(b"\xff\x4f\xff\x51")
    data[siz + 40 : siz + 42] = struct.pack(">H", 16384)
    with pytest.raises(ImageError) as info:
        decode(bytes(data))
    assert info.value.type == TOO_LARGE


def test_jp2_box_and_codestream_must_agree() -> None:
    data = bytearray(jp2_small())
    ihdr = data.find(b"ihdr")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", 10, 10)  # the codestream still says 64x48
    with pytest.raises(ImageError) as info:
        decode(bytes(data))
    assert info.value.type == DECODE_ERROR


def test_small_exr_is_size_checked_then_unsupported() -> None:
    data = exr_header(64, 48)
    assert header_size(data, sniff(data)) == (64, 48)
    with pytest.raises(ImageError) as info:
        decode(data)
    assert info.value.type == UNSUPPORTED_FORMAT


def test_unreadable_header_is_not_decoded_blind() -> None:
    for data in (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\nsideways\n", b"P6\nwide tall\n255\n"):
        with pytest.raises(ImageError) as info:
            decode(data)
        assert info.value.type == DECODE_ERROR, data


def small_files() -> dict[str, bytes]:
    img = small_image()
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return {
        "hdr": encoded(".hdr", img.astype(np.float32) / 255),
        "pfm": encoded(".pfm", img.astype(np.float32) / 255),
        "jp2": jp2_small(),
        "j2k": jp2_codestream(jp2_small()),
        "ppm": encoded(".ppm"),
        "pgm": encoded(".pgm", gray),
        "pgm-comment": b"P5\n# by hand\n64 48\n255\n" + gray.tobytes(),
        "pam": encoded(".pam"),
        "sunras": encoded(".ras"),
        "tiff": encoded(".tiff"),
    }


@pytest.mark.parametrize("name", sorted(small_files()))
def test_small_images_decode_like_opencv(name: str) -> None:
    data = small_files()[name]
    assert header_size(data, sniff(data)) == (64, 48)
    expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert expected is not None
    assert np.array_equal(decode(data).image, expected)


MEMORY_PROBE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import test_bombs
from imgstream.io.imaging import decode
from imgstream.errors import ImageError

def hwm():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:"))

bombs = {name: test_bombs.BOMBS[name]() for name in ("hdr", "jp2", "j2k", "j2k-tiles", "exr")}
decode(test_bombs.encoded(".png"))  # warm up: codecs and their tables loaded
report = {}
for name, bomb in bombs.items():
    before = hwm()
    started = time.perf_counter()
    try:
        decode(bomb)
        kind = "decoded"
    except ImageError as exc:
        kind = exc.type
    report[name] = [kind, time.perf_counter() - started, hwm() - before]
print(json.dumps(report))
"""


def test_bombs_are_refused_in_bounded_memory() -> None:
    here = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, here],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    report = json.loads(out)
    for name, (kind, seconds, grown_kib) in report.items():
        assert kind == TOO_LARGE, (name, kind)
        assert seconds < 0.05, (name, seconds)
        assert grown_kib < 50 * 1024, (name, grown_kib)


# Files too small for the pixels their header claims (tests/fixtures/mutate.py
# found them): width and height set to 9000, 81 Mpx, under the default limit,
# so only the data check refuses them; a PNG chunk length set to 2^31-1.
LIE = 9000


def with_jpeg_size(data: bytes, w: int, h: int) -> bytes:
    out = bytearray(data)
    sof = max(out.find(b"\xff\xc0"), out.find(b"\xff\xc2"))
    out[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    return bytes(out)


def with_tiff_size(data: bytes, w: int, h: int) -> bytes:
    """Width, height and rows per strip set (as LONGs) in a little-endian TIFF."""
    out = bytearray(data)
    (ifd,) = struct.unpack("<I", out[4:8])
    (count,) = struct.unpack("<H", out[ifd : ifd + 2])
    for k in range(count):
        at = ifd + 2 + 12 * k
        tag = struct.unpack("<H", out[at : at + 2])[0]
        if tag in (256, 257, 278):
            struct.pack_into("<HII", out, at + 2, 4, 1, w if tag == 256 else h)
    return bytes(out)


def refused_fast(data: bytes) -> ImageError:
    started = time.perf_counter()
    with pytest.raises(ImageError) as info:
        decode(data)
    assert time.perf_counter() - started < 0.05
    return info.value


JPEG_KINDS = {
    "baseline": (),
    "progressive": (cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "optimized-444": (
        cv2.IMWRITE_JPEG_OPTIMIZE,
        1,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    ),
}


@pytest.mark.parametrize("kind", sorted(JPEG_KINDS))
def test_jpeg_frame_larger_than_its_data_is_refused(kind: str) -> None:
    # Before: OpenCV decoded it, with warnings, to 9000x9000 of grey (1-2 s, 700 MB).
    data = with_jpeg_size(encoded(".jpg", params=JPEG_KINDS[kind]), LIE, LIE)
    error = refused_fast(data)
    assert error.type == DECODE_ERROR
    assert "9000x9000 pixels need at least" in error.message


@pytest.mark.parametrize("kind", sorted(JPEG_KINDS))
@pytest.mark.parametrize("shape", [(2048, 2048), (1000, 3000, 3), (9, 17, 3)])
def test_whole_jpegs_at_their_most_compressible_still_decode(kind, shape) -> None:
    # One flat colour, optimised Huffman codes: the fewest bits per block a
    # whole file has (about 2 per block, twice the floor).
    data = encoded(".jpg", np.full(shape, 255, np.uint8), JPEG_KINDS[kind])
    assert decode(data).image.shape[:2] == shape[:2]


TIFF_KINDS = {
    "lzw": cv2.IMWRITE_TIFF_COMPRESSION_LZW,
    "deflate": cv2.IMWRITE_TIFF_COMPRESSION_ADOBE_DEFLATE,
    "packbits": cv2.IMWRITE_TIFF_COMPRESSION_PACKBITS,
    "none": cv2.IMWRITE_TIFF_COMPRESSION_NONE,
}


@pytest.mark.parametrize("kind", sorted(TIFF_KINDS))
def test_tiff_size_larger_than_its_data_is_refused(kind: str) -> None:
    # Before: LZW and deflate decoded to 9000x9000 of zeros (0.6-0.9 s, 700 MB).
    data = encoded(".tiff", params=(cv2.IMWRITE_TIFF_COMPRESSION, TIFF_KINDS[kind]))
    error = refused_fast(with_tiff_size(data, LIE, LIE))
    assert error.type == DECODE_ERROR


@pytest.mark.parametrize("kind", sorted(TIFF_KINDS))
def test_whole_tiffs_at_their_most_compressible_still_decode(kind: str) -> None:
    # Zeros in one strip: deflate at its 1032:1 limit comes within 2% of the floor.
    params = (cv2.IMWRITE_TIFF_COMPRESSION, TIFF_KINDS[kind], cv2.IMWRITE_TIFF_ROWSPERSTRIP, 3000)
    for shape in ((3000, 3000), (3000, 3000, 3)):
        data = encoded(".tiff", np.zeros(shape, np.uint8), params)
        assert decode(data).image.shape[:2] == shape[:2]


def test_png_chunk_longer_than_the_file_is_refused_before_allocating() -> None:
    # Before: OpenCV allocated the chunk's 2 GB and zeroed it (3-5 s).
    data = bytearray(encoded(".png"))
    idat = data.find(b"IDAT") - 4
    data[idat : idat + 4] = struct.pack(">I", 2**31 - 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    error = refused_fast(bytes(data))
    assert error.type == DECODE_ERROR
    assert "chunk b'IDAT'" in error.message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def with_last_scan_repeated(data: bytes, times: int) -> bytes:
    """A progressive JPEG whose last scan (header and data) comes ``times`` more times."""
    last = data.rfind(b"\xff\xda")
    return data[:-2] + data[last:-2] * times + b"\xff\xd9"


def test_jpeg_with_thousands_of_scans_is_refused() -> None:
    # libjpeg visits every block once per scan: 2000x2000 and 2006 scans in
    # 113 KB took 9.6 s to decode before (6 scans: 0.017 s).
    blocks = np.random.default_rng(1).integers(0, 256, (250, 250), dtype=np.uint8)
    img = cv2.resize(blocks, (2000, 2000), interpolation=cv2.INTER_NEAREST)
    data = encoded(".jpg", img, (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))
    error = refused_fast(with_last_scan_repeated(data, 2000))
    assert error.type == TOO_LARGE
    assert "2006 scans" in error.message


def test_jpeg_scan_limit_is_exact() -> None:
    data = encoded(".jpg", params=(cv2.IMWRITE_JPEG_PROGRESSIVE, 1))
    scans = data.count(b"\xff\xda")
    at_limit = with_last_scan_repeated(data, MAX_JPEG_SCANS - scans)
    assert decode(at_limit).image.shape == (48, 64, 3)
    over = with_last_scan_repeated(data, MAX_JPEG_SCANS - scans + 1)
    assert refused_fast(over).type == TOO_LARGE
