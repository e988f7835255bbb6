"""Image sizes read from the headers of the less common formats, and what a file can hold.

:func:`imgstream.io.imaging.header_size` reads JPEG, PNG, GIF, BMP and WebP
itself and asks :func:`size` here for the rest: TIFF, Radiance HDR, JPEG
2000 (raw codestream and JP2 boxes), OpenEXR, PNM (P1-P6), PAM (P7), PFM and
Sun raster. Several of these compress well (run-length HDR, wavelet JPEG 2000,
zip/piz EXR), so a small file can claim a huge image; reading the size first
lets the caller refuse the bomb before OpenCV allocates anything. Each parser
returns ``(width, height)`` or ``None`` when the header cannot be read (the
caller refuses such files rather than decoding them blind), and raises
``too_large`` for headers that are dangerous in ways other than pixel count
(for example a JPEG 2000 codestream with thousands of components).

A size under the pixel limit can still be a lie that costs time and memory:
decoders allocate for the claim, then fill what the data does not cover with
zeros. :func:`png_chunks_fit` refuses a PNG chunk longer than the rest of
the file, and :func:`tiff_min_bytes` says how few bytes a TIFF's compression
can expand into its claimed pixels (the JPEG floor is in
:mod:`imgstream.io.imaging`, beside its marker walk). Hostile files found these:
``tests/fixtures/mutate.py`` makes them.
"""

from __future__ import annotations

import re
import struct

from imgstream.errors import DECODE_ERROR, TOO_LARGE, ImageError

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


#: Tags read from a TIFF's first IFD: width, height, bits per sample,
#: compression, samples per pixel, tile width, tile length.
_TIFF_TAGS = frozenset((256, 257, 258, 259, 277, 322, 323))

#: The most bytes of pixels one byte of data becomes, by TIFF compression:
#: none; LZW (a code of at least 9 bits names at most 4096 bytes); deflate
#: (1032:1, a 258-byte match coded in 2 bits); PackBits (128 bytes from 2).
#: Compressions missing here (JPEG, CCITT fax, ...) are not checked.
_TIFF_MAX_RATIO = {1: 1, 5: 3641, 8: 1032, 32946: 1032, 32773: 64}


def _tiff_tags(data: bytes) -> dict[int, int]:
    """The first value of each tag of :data:`_TIFF_TAGS` in the first IFD."""
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    found: dict[int, int] = {}
    for k in range(count):
        entry = data[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        tag, typ, n = struct.unpack(order + "HHI", entry[:8])
        if tag in _TIFF_TAGS:
            fmt = order + ("H" if typ == 3 else "I")
            field = entry[8:12]
            if n * struct.calcsize(fmt) > 4:  # the values are elsewhere: the field is their offset
                (at,) = struct.unpack(order + "I", field)
                field = data[at : at + 4]
            (found[tag],) = struct.unpack(fmt, field[: struct.calcsize(fmt)])
    return found


def _tiff(data: bytes) -> tuple[int, int] | None:
    try:
        tags = _tiff_tags(data)
    except struct.error:
        return None
    if 256 not in tags or 257 not in tags:
        return None
    # libtiff allocates whole tiles, and a tile may be larger than the image:
    # the size to check is what gets allocated.
    return max(tags[256], tags.get(322, 0)), max(tags[257], tags.get(323, 0))


def tiff_min_bytes(data: bytes) -> int:
    """The fewest bytes a TIFF can hold its pixels in (0 where we cannot tell).

    libtiff decodes an LZW or deflate strip that ends early with a warning,
    and OpenCV returns the image: a 16 KB file whose width and height were
    set to 9000 decoded to 81 Mpx of zeros.
    """
    try:
        tags = _tiff_tags(data)
    except struct.error:
        return 0
    ratio = _TIFF_MAX_RATIO.get(tags.get(259, 1))
    if ratio is None or 256 not in tags or 257 not in tags:
        return 0
    bits = tags[256] * tags[257] * tags.get(277, 1) * tags.get(258, 1)
    return bits // 8 // ratio


def png_chunks_fit(data: bytes) -> None:
    """Refuse a PNG whose chunk claims more bytes than the file has left.

    OpenCV's PNG reader allocates a chunk's declared length before reading
    it: an IDAT length set to 2^31-1 in a 15 KB file cost 2 GB and 4 s.
    """
    i, n = 8, len(data)
    while i + 8 <= n:
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        if length > n - i - 12:
            raise ImageError(
                DECODE_ERROR,
                f"truncated or damaged PNG: chunk {kind!r} at byte {i} claims {length} bytes,"
                f" {max(0, n - i - 12)} are left",
            )
        if kind == b"IEND":
            return
        i += 12 + length


_PARSERS = {
    "hdr": _hdr,
    "jp2": _jp2,
    "exr": _exr,
    "pnm": _pnm,
    "pam": _pam,
    "pfm": _pfm,
    "sunras": _sunras,
    "tiff": _tiff,
}


def size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) of a format listed above; None if not one or not readable.

    Raises ``struct.error`` on a header cut short (the caller reports it).
    """
    parser = _PARSERS.get(fmt)
    return None if parser is None else parser(data)
