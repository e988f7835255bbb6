"""Huffman-only deflate for PNG scanlines (compiled from _deflate.c)."""

from typing_extensions import Buffer

def huffman(data: Buffer, min_bits: float = 2.0) -> bytes | None: ...
