"""Decode and encode images, with limits checked before anything is allocated.

:func:`sniff` names the format from the magic bytes (unknown bytes are
``unsupported_format``), :func:`header_size` reads width and height from the
header without decoding pixels (the common formats here, the rest in
:mod:`imgstream.io.headers`), so a decompression bomb is refused as
``too_large`` in microseconds. A file too small to hold the pixels its
header claims (a JPEG, PNG or TIFF whose size fields were enlarged, a PNG
chunk longer than the file) is a ``decode_error`` before OpenCV allocates.
Every format :func:`sniff` accepts has its size read first; a file whose
size cannot be read from its header is a ``decode_error`` and is never
handed to OpenCV blind. OpenEXR is size-checked
and then refused as ``unsupported_format``: OpenCV ships its EXR decoder
disabled (``OPENCV_IO_ENABLE_OPENEXR``) because of its security record, and
we keep it so. Decoding goes through
``cv2.imdecode`` on bytes (never a path) with ``cv2.IMREAD_COLOR``: the
pixels are exactly those ``cv2.imread`` gives (EXIF orientation applied,
alpha dropped, 16-bit scaled to 8-bit, grayscale as three equal channels).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import simplejpeg

from imgstream._cv import cv2
from imgstream.config import DEFAULT_MAX_PIXELS
from imgstream.errors import DECODE_ERROR, TOO_LARGE, UNSUPPORTED_FORMAT, ImageError
from imgstream.io import headers
from imgstream.io.png import encode_png

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
    (b"\x00\x00\x00\x0cjP  ", 0, "jp2"),
    (b"\xff\x4f\xff\x51", 0, "jp2"),
    (b"v/1\x01", 0, "exr"),
    (b"#?RADIANCE", 0, "hdr"),
    (b"#?RGBE", 0, "hdr"),
    (b"\x59\xa6\x6a\x95", 0, "sunras"),
)


def sniff(data: bytes) -> str:
    """The image format of ``data``, or raise ``unsupported_format``."""
    for magic, offset, name in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) > 2 and data[0:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return "pnm"
    if data[:3] == b"P7\n":
        return "pam"
    if data[:2] in (b"PF", b"Pf") and data[2:3].isspace():
        return "pfm"
    head = data[:16]
    shown = head.hex(" ") if head else "empty file"
    raise ImageError(UNSUPPORTED_FORMAT, f"not a recognised image format (first bytes: {shown})")


def _jpeg(data: bytes) -> tuple[int, int] | None:
    return _jpeg_info(data)[0]


def _exif_orientation(segment: bytes) -> int | None:
    """The EXIF orientation tag (0x0112) of an APP1 payload, if any."""
    if not segment.startswith(b"Exif\x00\x00"):
        return None
    tiff = segment[6:]
    order = "<" if tiff[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        for k in range(count):
            entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
            tag, _typ = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112:
                return int(struct.unpack(order + "H", entry[8:10])[0])
    except struct.error:
        return 0  # unreadable EXIF: let OpenCV decide what it means
    return None


def _jpeg_info(data: bytes) -> tuple[tuple[int, int] | None, int | None, int]:
    """Walk the JPEG markers up to the first scan: frame size, orientation, bytes needed.

    libjpeg decodes a truncated file with a warning and grey rows at the
    bottom; we refuse it. In entropy-coded data 0xFF is always stuffed, so an
    end-of-image marker after the first scan exists only if the file is whole.
    A marker structure we cannot follow is left to the decoder to judge.

    The third value is the fewest bytes a whole file with this frame can
    have (see :func:`_jpeg_min_bits`): a frame enlarged in a damaged or
    hostile file decodes, with warnings, to an image of grey rows as large
    as the header says (a 4 KB file made 81 Mpx and 700 MB that way).
    """
    i, n = 2, len(data)
    size: tuple[int, int] | None = None
    sos: int | None = None
    orientation: int | None = None
    need_bits = 0
    while i + 4 <= n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF and i + 9 <= n:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            size = (w, h)
            # Components from byte 10 on, 3 bytes each: id, H<<4 | V, table.
            nf = data[i + 9] if i + 9 < n else 0
            factors = [(b >> 4, b & 15) for b in data[i + 11 : i + 10 + 3 * nf : 3]]
            need_bits = _jpeg_min_bits(marker, w, h, factors) if length == 8 + 3 * nf else 0
        if marker == 0xE1 and orientation is None:
            orientation = _exif_orientation(data[i + 4 : i + 2 + length])
        if marker == 0xDA:
            sos = i
            break
        i += 2 + length
    if data.rfind(b"\xff\xd9") < (sos if sos is not None else 2):
        raise ImageError(DECODE_ERROR, "truncated JPEG: no end-of-image marker")
    # Past the first scan 0xFF is stuffed, so every ff da is a start of scan.
    scans = 0 if sos is None else data.count(b"\xff\xda", sos)
    if scans > MAX_JPEG_SCANS:
        raise ImageError(
            TOO_LARGE, f"JPEG has {scans} scans, over the {MAX_JPEG_SCANS} limit (most have 1-10)"
        )
    return size, orientation, -(-need_bits // 8)


#: libjpeg visits every block of a progressive JPEG once per scan, however
#: little the scan codes: one 2000x2000 file of 113 KB with its last scan
#: repeated 2000 times took 9.6 s to decode (0.017 s with its 6 scans).
#: Encoders write 1-10 scans (libjpeg's progression: 10 for colour, 6 for
#: gray); nvImageCodec refuses more than 256 by default against the same
#: attack. At 100, a 16 Mpx file costs at most ~2 s here.
MAX_JPEG_SCANS = 100


_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def _jpeg_min_bits(marker: int, w: int, h: int, factors: list[tuple[int, int]]) -> int:
    """The fewest bits of Huffman-coded data that fill a ``w`` x ``h`` frame.

    Every scan codes each 8x8 block of its components with at least one
    Huffman code of at least one bit (a DC scan: one code per block; a
    sequential scan: DC and end-of-block), and a lossless frame (SOF3) codes
    every sample. So a whole file holds at least one bit per block (sample)
    of its smallest component. Arithmetic coding has no such floor (0 here),
    nor do hierarchical frames, which we leave to libjpeg.
    """
    if marker not in (0xC0, 0xC1, 0xC2, 0xC3) or not factors:
        return 0
    h_max = max(f[0] for f in factors)
    v_max = max(f[1] for f in factors)
    if min(min(f) for f in factors) == 0:
        return 0  # invalid sampling: libjpeg refuses it
    units = []
    for fh, fv in factors:
        cw, ch = -(-w * fh // h_max), -(-h * fv // v_max)
        units.append(cw * ch if marker == 0xC3 else -(-cw // 8) * -(-ch // 8))
    return min(units)


def _webp(data: bytes) -> tuple[int, int] | None:
    """The size in the first chunk, if it is what its name says.

    libwebp refuses a ``VP8 `` chunk without its start code, a ``VP8L``
    without its signature byte and a ``VP8X`` whose length is not 10: such a
    file is damaged, and the bytes where its size would be mean nothing (a
    lossy WebP whose chunk was renamed ``VP8X`` "was" 6302210x16385).
    """
    chunk = data[12:16]
    try:
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L" and data[20:21] == b"\x2f":
            b = data[21:25]
            bits = int.from_bytes(b, "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X" and data[16:20] == b"\x0a\x00\x00\x00":
            w = int.from_bytes(data[24:27], "little") + 1
            h = int.from_bytes(data[27:30], "little") + 1
            return w, h
    except struct.error:
        return None
    return None


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) from the header, without decoding; None if not parsed."""
    try:
        if fmt == "jpeg":
            return _jpeg(data)
        if fmt == "png" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if fmt == "gif":
            w, h = struct.unpack("<HH", data[6:10])
            return int(w), int(h)
        if fmt == "bmp":
            if data[14:18] == b"\x0c\x00\x00\x00":  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                w, h = struct.unpack("<HH", data[18:22])
                return int(w), int(h)
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if fmt == "webp":
            return _webp(data)
        return headers.size(data, fmt)
    except struct.error:
        raise ImageError(DECODE_ERROR, f"truncated {fmt.upper()} header") from None


def _decode_turbo(data: bytes) -> np.ndarray | None:
    """libjpeg-turbo through simplejpeg: about twice as fast as cv2.imdecode here.

    With accurate DCT and fancy upsampling it gives the same pixels as OpenCV
    (which bundles libjpeg-turbo with those defaults); tests check it on real
    photos. Returns None where OpenCV must decide (CMYK, 12-bit, arithmetic
    coding, data simplejpeg rejects), and EXIF-rotated files never come here.
    Strict mode turns libjpeg's corrupt-data warnings into errors, so a damaged
    file is always decoded by OpenCV, whose error recovery defines the result.
    """
    try:
        img = simplejpeg.decode_jpeg(
            data, colorspace="BGR", fastdct=False, fastupsample=False, strict=True
        )
    except (ValueError, RuntimeError):
        return None
    return np.ascontiguousarray(img)


@dataclass(frozen=True)
class Decoded:
    """A decoded image and what we know of its source."""

    image: np.ndarray
    format: str


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode image bytes to 8-bit BGR, refusing bombs and broken files."""
    fmt = sniff(data)
    orientation: int | None = None
    need = 0  # the fewest bytes that can hold the pixels the header claims
    if fmt == "jpeg":
        size, orientation, need = _jpeg_info(data)
    else:
        size = header_size(data, fmt)
    if size is None:
        # Decoding blind is how a bomb gets through: no size, no decode.
        raise ImageError(DECODE_ERROR, f"cannot read the image size from the {fmt.upper()} header")
    w, h = size
    if w * h > max_pixels:
        raise ImageError(
            TOO_LARGE, f"{fmt.upper()} is {w}x{h} = {w * h} pixels, over the {max_pixels} limit"
        )
    if w == 0 or h == 0:
        raise ImageError(DECODE_ERROR, f"{fmt.upper()} header says {w}x{h}")
    if fmt == "exr":
        raise ImageError(UNSUPPORTED_FORMAT, "OpenEXR decoding is disabled in OpenCV here")
    if fmt == "png":
        headers.png_chunks_fit(data)
    elif fmt == "tiff":
        need = headers.tiff_min_bytes(data)
    if len(data) < need:
        raise ImageError(
            DECODE_ERROR,
            f"truncated or damaged {fmt.upper()}: {w}x{h} pixels need at least {need} bytes"
            f" of data, the file has {len(data)}",
        )
    if fmt == "jpeg" and orientation in (None, 1):
        fast = _decode_turbo(data)
        if fast is not None:
            return Decoded(fast, fmt)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(
            DECODE_ERROR, f"OpenCV could not decode the {fmt.upper()}: {exc}"
        ) from None
    if img is None:
        raise ImageError(
            DECODE_ERROR, f"corrupt or truncated {fmt.upper()} (OpenCV decoded nothing)"
        )
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageError(TOO_LARGE, f"{img.shape[1]}x{img.shape[0]} is over the {max_pixels} limit")
    return Decoded(img, fmt)


def encode_params(fmt: str, png_level: int = 1, jpeg_quality: int = 95) -> list[int]:
    """OpenCV encoder flags for an output format (PNG and WebP are lossless).

    PNG pixels are identical at every level, so the default is OpenCV's own
    fastest setting: level 1 with the RLE strategy and the SUB filter (about
    2x faster than level 1 with adaptive filtering, at a similar size).
    """
    if fmt == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_level]
        if png_level <= 1:
            params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
            if hasattr(cv2, "IMWRITE_PNG_FILTER"):
                params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
        return params
    if fmt == "jpg":
        return [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    if fmt == "webp":
        return [cv2.IMWRITE_WEBP_QUALITY, 101]  # above 100 means lossless
    raise ValueError(f"unknown output format {fmt!r}")


def encode(img: np.ndarray, fmt: str, params: list[int]) -> bytes:
    """Encode an image to bytes in the given format.

    8-bit PNG goes through :func:`encode_png` (the level is ``params[1]``);
    everything else through ``cv2.imencode``.
    """
    if fmt == "png" and img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (1, 3, 4)):
        level = params[1] if len(params) > 1 and params[0] == cv2.IMWRITE_PNG_COMPRESSION else 1
        return encode_png(img, level)
    ok, buf = cv2.imencode("." + fmt, img, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {img.shape} {img.dtype} image as {fmt}")
    return bytes(buf)
