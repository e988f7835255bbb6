"""Huffman-only deflate for PNG scanlines (compiled from _deflate.c)."""

from typing_extensions import Buffer

def huffman(data: Buffer, min_bits: float = 2.0) -> bytes | None:
    """A raw deflate stream of ``data`` (any buffer but ``bytes`` is copied first)."""

def png_idat(rows: Buffer, bpp: int, min_bits: float = 2.0) -> bytes | None:
    """The zlib stream of a PNG's IDAT from 2-D rows (filtered into a private buffer)."""
