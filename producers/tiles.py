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

from imgstream.config import MAX_SOURCE_PIXELS
from imgstream.errors import ImageError
from imgstream.io import imaging, png
from imgstream.io.objstore import is_s3
from imgstream.io.storage import safe_name
from imgstream.io.stores import Outputs, absolute, join
from imgstream.producers.files import Found
from imgstream.schema.records import ImageRef
from imgstream.tiling import grid, tile_meta


def header_pixels(path: str, files: Outputs | None = None) -> int | None:
    """Width x height from the file (or object) header without decoding, or None."""
    try:
        head = (files if files is not None else Outputs()).head(path, 1 << 18)
        size = imaging.header_size(head, imaging.sniff(head))
    except (ImageError, OSError):
        return None
    return size[0] * size[1] if size else None


#: The largest source image file the producer reads to cut into tiles.
MAX_SOURCE_BYTES = 4 << 30


def tile_id(parent: str, row: int, col: int) -> str:
    """The id of one tile of a parent."""
    return f"{parent}~r{row}c{col}"


def cut_tiles(
    found: Found,
    tile: int,
    overlap: int,
    store_dir: str,
    max_pixels: int = MAX_SOURCE_PIXELS,
    files: Outputs | None = None,
) -> Iterator[ImageRef]:
    """Tile refs for one image (its tiles are written under ``store_dir``, a folder or
    an ``s3://`` prefix; the image itself may be a file or an object)."""
    files = files if files is not None else Outputs()
    parent = found.ref
    data = files.read(parent.uri, MAX_SOURCE_BYTES)
    image = imaging.decode(data, max_pixels).image
    del data
    height, width = image.shape[:2]
    folder = join(store_dir, safe_name(parent.id))
    for t in grid(width, height, tile, overlap):
        h = t.halo
        path = join(folder, f"r{t.row:04d}c{t.col:04d}.png")
        files.write(path, png.encode_png(image[h.y : h.y + h.h, h.x : h.x + h.w]))
        yield ImageRef(
            id=tile_id(parent.id, t.row, t.col),
            uri=absolute(path),
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
    files = Outputs()
    for item in found:
        uri = item.ref.uri
        if not (is_s3(uri) or os.path.isfile(uri)):
            yield item, None
            continue
        if over_pixels is not None:
            pixels = header_pixels(uri, files)
            if pixels is None or pixels <= over_pixels:
                yield item, None
                continue
        try:
            yield item, list(cut_tiles(item, tile, overlap, store_dir, max_pixels, files))
        except (ImageError, OSError):
            yield item, None
