"""Image sizes read from the headers of the less common formats OpenCV decodes.

:func:`imgstream.imaging.header_size` reads JPEG, PNG, GIF, BMP, TIFF and
WebP itself and asks :func:`size` here for the rest: Radiance HDR, JPEG 2000
(raw codestream and JP2 boxes), OpenEXR, PNM (P1-P6), PAM (P7), PFM and Sun
raster. Several of these compress well (run-length HDR, wavelet JPEG 2000,
zip/piz EXR), so a small file can claim a huge image; reading the size first
lets the caller refuse the bomb before OpenCV allocates anything. Each parser
returns ``(width, height)`` or ``None`` when the header cannot be read (the
caller refuses such files rather than decoding them blind), and raises
``too_large`` for headers that are dangerous in ways other than pixel count
(for example a JPEG 2000 codestream with thousands of components).
"""

from __future__ import annotations

import re
import struct

from imgstream.errors import TOO_LARGE, ImageError

#: How far into a file a text header (HDR, PNM, PAM, PFM) is searched.
_TEXT_HEADER_BYTES = 64 << 10

#: JPEG 2000 components OpenCV can turn into BGR; more is memory for nothing.
_MAX_J2K_COMPONENTS = 4

#: OpenJPEG keeps ~4 KB of coding state per tile and component whatever the
#: tile's size: 255x255 one-pixel tiles (a 2 KB file) cost 750 MB. 4096 tiles
#: is ~50 MB at most and still allows 160x160 tiles on a 100 Mpx image.
MAX_J2K_TILES = 4096

_HDR_RES = re.compile(rb"^([-+])([XY]) +(\d+) +([-+])([XY]) +(\d+)\s*$")


def _hdr(data: bytes) -> tuple[int, int] | None:
    """Radiance RGBE: header lines, a blank line, then e.g. ``-Y 480 +X 640``."""
    lines = data[:_TEXT_HEADER_BYTES].split(b"\n")
    for k, line in enumerate(lines[:-1]):
        if line.strip() == b"":
            match = _HDR_RES.match(lines[k + 1])
            if match is None or match.group(2) == match.group(5):
                return None
            first, second = int(match.group(3)), int(match.group(6))
            # The first axis is the slow (row) one: Y first means height first.
            return (second, first) if match.group(2) == b"Y" else (first, second)
    return None


def _pnm_tokens(data: bytes, count: int) -> list[int] | None:
    """The first ``count`` numbers after a PNM/PFM magic, skipping ``#`` comments."""
    text = re.sub(rb"#[^\n]*", b" ", data[2:_TEXT_HEADER_BYTES])
    tokens = text.split(None, count)[:count]
    if len(tokens) < count or not all(t.isdigit() for t in tokens):
        return None
    return [int(t) for t in tokens]


def _pnm(data: bytes) -> tuple[int, int] | None:
    found = _pnm_tokens(data, 2)
    return None if found is None else (found[0], found[1])


def _pfm(data: bytes) -> tuple[int, int] | None:
    # PFM has no comments; its third field (scale) is a float, not read here.
    tokens = data[2:_TEXT_HEADER_BYTES].split(None, 2)[:2]
    if len(tokens) < 2 or not all(t.isdigit() for t in tokens):
        return None
    return int(tokens[0]), int(tokens[1])


def _pam(data: bytes) -> tuple[int, int] | None:
    """PAM (P7): ``WIDTH``/``HEIGHT``/``DEPTH`` lines up to ``ENDHDR``."""
    fields: dict[bytes, bytes] = {}
    for line in data[3:_TEXT_HEADER_BYTES].split(b"\n"):
        words = line.split(b"#", 1)[0].split()
        if words == [b"ENDHDR"]:
            break
        if len(words) >= 2:
            fields[words[0].upper()] = words[1]
    else:
        return None
    try:
        w, h, depth = (int(fields[k]) for k in (b"WIDTH", b"HEIGHT", b"DEPTH"))
    except (KeyError, ValueError):
        return None
    if depth > 4:
        raise ImageError(TOO_LARGE, f"PAM has {depth} channels per pixel (OpenCV takes 1-4)")
    return w, h


def _sunras(data: bytes) -> tuple[int, int] | None:
    w, h = struct.unpack(">II", data[4:12])
    return int(w), int(h)


def _j2k_siz(data: bytes, at: int) -> tuple[int, int] | None:
    """The image size in a JPEG 2000 codestream's SIZ segment (which must come first)."""
    if data[at : at + 4] != b"\xff\x4f\xff\x51":
        return None
    _lsiz, _rsiz, xsiz, ysiz, xo, yo, xt, yt, xto, yto, csiz = struct.unpack(
        ">HHIIIIIIIIH", data[at + 4 : at + 42]
    )
    if csiz > _MAX_J2K_COMPONENTS:
        raise ImageError(TOO_LARGE, f"JPEG 2000 has {csiz} components (OpenCV takes 1-4)")
    if xo > xsiz or yo > ysiz or xt == 0 or yt == 0 or xto > xsiz or yto > ysiz:
        return None
    tiles = -(-(xsiz - xto) // xt) * -(-(ysiz - yto) // yt)
    if tiles > MAX_J2K_TILES:
        raise ImageError(
            TOO_LARGE, f"JPEG 2000 has {tiles} tiles of {xt}x{yt} (limit {MAX_J2K_TILES})"
        )
    return xsiz - xo, ysiz - yo


def _jp2(data: bytes) -> tuple[int, int] | None:
    """JPEG 2000: a raw codestream, or JP2 boxes whose ``jp2c`` holds one.

    The codestream's SIZ is what OpenJPEG allocates from, so it decides; the
    ``ihdr`` box is only a claim and must agree with it when both are there.
    """
    if data[:4] == b"\xff\x4f\xff\x51":
        return _j2k_siz(data, 0)
    ihdr: tuple[int, int] | None = None
    i, n = 0, len(data)
    while i + 8 <= n:
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        header = 8
        if length == 1:  # a 64-bit length follows the type
            (length,) = struct.unpack(">Q", data[i + 8 : i + 16])
            header = 16
        elif length == 0:  # the box runs to the end of the file
            length = n - i
        if length < header:
            return None
        if kind == b"jp2h":  # a superbox: step into it
            i += header
            continue
        if kind == b"ihdr":
            h, w = struct.unpack(">II", data[i + header : i + header + 8])
            ihdr = (int(w), int(h))
        if kind == b"jp2c":
            siz = _j2k_siz(data, i + header)
            if siz is None or (ihdr is not None and ihdr != siz):
                return None
            return siz
        i += length
    return None


def _exr(data: bytes) -> tuple[int, int] | None:
    """OpenEXR: the ``dataWindow`` (box2i) attribute of the first header."""
    i, n = 8, min(len(data), _TEXT_HEADER_BYTES)
    while i < n:
        end_name = data.find(b"\x00", i, n)
        if end_name <= i:  # an empty name ends the header
            return None
        name = data[i:end_name]
        end_type = data.find(b"\x00", end_name + 1, n)
        if end_type < 0:
            return None
        (size,) = struct.unpack("<i", data[end_type + 1 : end_type + 5])
        value = end_type + 5
        if size < 0:
            return None
        if name == b"dataWindow" and size == 16:
            x0, y0, x1, y1 = struct.unpack("<iiii", data[value : value + 16])
            if x1 < x0 or y1 < y0:
                return None
            return x1 - x0 + 1, y1 - y0 + 1
        i = value + size
    return None


_PARSERS = {
    "hdr": _hdr,
    "jp2": _jp2,
    "exr": _exr,
    "pnm": _pnm,
    "pam": _pam,
    "pfm": _pfm,
    "sunras": _sunras,
}


def size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) of a format listed above; None if not one or not readable.

    Raises ``struct.error`` on a header cut short (the caller reports it).
    """
    parser = _PARSERS.get(fmt)
    return None if parser is None else parser(data)
