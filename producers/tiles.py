"""Cut large images into overlapping tiles, stored as files, one ref per tile.

The producer decodes the parent once (the only process that holds it whole),
writes each tile *with its halo* as a lossless PNG under a tile store, and
produces refs that carry the parent id, grid position, core and halo boxes
and the overlap. Workers then process tiles like any image, each holding only
a tile. Tile ids are ``{parent}~r{row}c{col}``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from imgstream import imaging
from imgstream.config import MAX_SOURCE_PIXELS
from imgstream.errors import ImageError
from imgstream.producers.files import Found
from imgstream.records import ImageRef
from imgstream.storage import safe_name, write_atomic
from imgstream.tiling import grid, tile_meta


def header_pixels(path: str) -> int | None:
    """Width x height from the file header without decoding, or None."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 18)
    try:
        size = imaging.header_size(head, imaging.sniff(head))
    except ImageError:
        return None
    return size[0] * size[1] if size else None


def tile_id(parent: str, row: int, col: int) -> str:
    """The id of one tile of a parent."""
    return f"{parent}~r{row}c{col}"


def cut_tiles(
    found: Found, tile: int, overlap: int, store_dir: str, max_pixels: int = MAX_SOURCE_PIXELS
) -> Iterator[ImageRef]:
    """Tile refs for one image (its tiles are written under ``store_dir``)."""
    parent = found.ref
    with open(parent.uri, "rb") as fh:
        data = fh.read()
    image = imaging.decode(data, max_pixels).image
    del data
    height, width = image.shape[:2]
    folder = os.path.join(store_dir, safe_name(parent.id))
    for t in grid(width, height, tile, overlap):
        h = t.halo
        path = os.path.join(folder, f"r{t.row:04d}c{t.col:04d}.png")
        write_atomic(path, imaging.encode_png(image[h.y : h.y + h.h, h.x : h.x + h.w]))
        yield ImageRef(
            id=tile_id(parent.id, t.row, t.col),
            uri=os.path.abspath(path),
            ts=parent.ts,
            source=parent.source,
            tile=tile_meta(parent.id, t, width, height, overlap, parent.uri),
        )


def expand_tiles(
    found: list[Found],
    tile: int,
    overlap: int,
    store_dir: str,
    over_pixels: int | None = None,
    max_pixels: int = MAX_SOURCE_PIXELS,
) -> Iterator[tuple[Found, list[ImageRef] | None]]:
    """For each input, its tile refs (or None when it is not tiled).

    With ``over_pixels``, only images whose header says they are larger are
    tiled; otherwise every decodable image is. An image that cannot be decoded
    here is passed through untiled, so the worker reports it as a failure.
    """
    for item in found:
        if item.ref.uri.startswith(("s3://", "memory://")) or not os.path.isfile(item.ref.uri):
            yield item, None
            continue
        if over_pixels is not None:
            pixels = header_pixels(item.ref.uri)
            if pixels is None or pixels <= over_pixels:
                yield item, None
                continue
        try:
            yield item, list(cut_tiles(item, tile, overlap, store_dir, max_pixels))
        except ImageError:
            yield item, None
