"""PNG output: 8-bit images to lossless PNG, whole or band by band.

Rows are SUB-filtered; photo-like images are deflated by the Huffman-only
coder in ``imgstream._deflate`` (stream/_deflate.c), everything else by
ISA-L. Every PNG decodes to exactly the pixels it was given.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
from isal import isal_zlib

from imgstream._cv import cv2

_png_idat: Callable[..., bytes | None] | None
try:  # stream/_deflate.c, built at install time when a C compiler is there
    from imgstream._deflate import png_idat as _png_idat
except ImportError:  # pragma: no cover - exercised only on a machine without one
    _png_idat = None


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = isal_zlib.crc32(body, isal_zlib.crc32(kind))
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


_PNG_COLOUR_TYPE = {1: 0, 3: 2, 4: 6}


def rows_of(img: np.ndarray) -> tuple[np.ndarray, int]:
    """An 8-bit image as PNG rows (height, width * channels) in PNG channel order.

    The input may be a (cropped) view: it is read in place, with one extra
    buffer only for colour, where PNG wants RGB(A) and OpenCV holds BGR(A).
    """
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    if c == 3:
        pixels = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif c == 4:
        pixels = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    else:
        pixels = img
    return pixels.reshape(h, w * c), int(c)  # a view: rows may be strided, their bytes are not


def filtered_rows(img: np.ndarray) -> memoryview:
    """Scanlines of an 8-bit image, SUB-filtered (each byte minus the one a pixel left)."""
    return _sub_filter(*rows_of(img))


def _sub_filter(rows: np.ndarray, c: int) -> memoryview:
    filtered = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 1  # the filter type
    filtered[:, 1 : 1 + c] = rows[:, :c]
    np.subtract(rows[:, c:], rows[:, :-c], out=filtered[:, 1 + c :])
    return filtered.data.cast("B")


def _png_header(width: int, height: int, channels: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)


def _png_check(img: np.ndarray) -> int:
    c = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype != np.uint8 or c not in _PNG_COLOUR_TYPE:
        raise ValueError(
            f"PNG writer takes 8-bit 1/3/4-channel images, got {img.shape} {img.dtype}"
        )
    return int(c)


def zlib_stream(img: np.ndarray, level: int) -> bytes:
    """The zlib stream of an image's SUB-filtered scanlines.

    At level 1 (the default) photo-like images are Huffman-coded only, by
    ``imgstream._deflate``: match finding buys nothing on camera noise, and
    skipping it is ~2-3x faster than ISA-L at the same size. Images where
    matches pay (masks, edges, flat graphics: under 2 bits per byte) and the
    other levels go to ISA-L.
    """
    rows, c = rows_of(img)
    if level == 1 and _png_idat is not None:
        if rows.strides[1] != 1:  # the coder reads each row as contiguous bytes
            rows = np.ascontiguousarray(rows)
        stream = _png_idat(rows, c)
        if stream is not None:
            return stream
    return isal_zlib.compress(_sub_filter(rows, c), min(max(level, 0), 3))


def encode_png(img: np.ndarray, level: int = 1) -> bytes:
    """Lossless 8-bit PNG with the SUB filter.

    PNG encoding is the costliest stage of a gray pipeline: zlib in OpenCV
    takes ~25 ms for a 1080p gray photo, ISA-L ~8 ms and the Huffman-only
    coder (:func:`zlib_stream`) ~3 ms, for files of about the same size. All
    release the GIL. Decoding the bytes gives back exactly ``img`` (tests
    check it against OpenCV's decoder).
    """
    c = _png_check(img)
    h, w = img.shape[:2]
    idat = zlib_stream(img, level)
    crc = isal_zlib.crc32(idat, isal_zlib.crc32(b"IDAT"))
    return b"".join(
        (
            _png_header(w, h, c),
            struct.pack(">I", len(idat)),
            b"IDAT",
            idat,
            struct.pack(">I", crc),
            _png_chunk(b"IEND", b""),
        )
    )


class PngStreamWriter:
    """Writes a PNG band by band, so a huge mosaic never sits whole in memory."""

    def __init__(self, fh: BinaryIO, width: int, height: int, channels: int, level: int = 1):
        if channels not in _PNG_COLOUR_TYPE:
            raise ValueError(f"PNG writer takes 1, 3 or 4 channels, got {channels}")
        self._fh = fh
        self.width, self.height, self.channels = width, height, channels
        self._rows = 0
        self._deflate = isal_zlib.compressobj(min(max(level, 0), 3))
        fh.write(_png_header(width, height, channels))

    def write(self, band: np.ndarray) -> None:
        """Append rows (an image ``width`` pixels wide, top to bottom)."""
        if _png_check(band) != self.channels or band.shape[1] != self.width:
            raise ValueError(f"band {band.shape} does not fit a {self.width}-wide PNG")
        self._rows += band.shape[0]
        if self._rows > self.height:
            raise ValueError(f"more than the {self.height} rows announced")
        data = self._deflate.compress(filtered_rows(band))
        if data:
            self._fh.write(_png_chunk(b"IDAT", data))

    def close(self) -> None:
        """Finish the stream (every row must have been written)."""
        if self._rows != self.height:
            raise ValueError(f"{self._rows} rows written, {self.height} announced")
        self._fh.write(_png_chunk(b"IDAT", self._deflate.flush()))
        self._fh.write(_png_chunk(b"IEND", b""))
