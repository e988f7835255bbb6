"""Tiling geometry: split a large image into a grid of tiles with a halo, and back.

Each tile has a *core* box (the cores partition the image exactly: every
pixel in exactly one core) and a *halo* box: the core grown by ``overlap``
pixels on every side, clipped to the image. A worker processes the halo box
and crops the result back to the core, so neighbourhood operations see real
neighbours across seams. The rule: the fused result equals the whole-image
result when ``overlap`` is at least the pipeline's footprint (the sum of the
radii of its local operations); at the image border the halo stops where the
image stops, so OpenCV's border handling is the same as for the whole image.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        """Pixels inside."""
        return self.w * self.h

    def as_list(self) -> list[int]:
        """[x, y, w, h]."""
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True)
class Tile:
    """One tile of a grid."""

    row: int
    col: int
    rows: int
    cols: int
    core: Box
    halo: Box

    @property
    def index(self) -> int:
        """Row-major position in the grid."""
        return self.row * self.cols + self.col

    def core_in_halo(self) -> Box:
        """The core box in the halo tile's own coordinates."""
        return Box(self.core.x - self.halo.x, self.core.y - self.halo.y, self.core.w, self.core.h)


def _spans(length: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(size, length - start)) for start in range(0, length, size)]


def grid(width: int, height: int, tile: int, overlap: int = 0) -> list[Tile]:
    """Tiles of at most ``tile`` x ``tile`` core pixels covering the image, row-major."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    if overlap < 0:
        raise ValueError(f"overlap must not be negative, got {overlap}")
    ys, xs = _spans(height, tile), _spans(width, tile)
    tiles = []
    for r, (y, h) in enumerate(ys):
        for c, (x, w) in enumerate(xs):
            hx, hy = max(0, x - overlap), max(0, y - overlap)
            hx1, hy1 = min(width, x + w + overlap), min(height, y + h + overlap)
            tiles.append(
                Tile(r, c, len(ys), len(xs), Box(x, y, w, h), Box(hx, hy, hx1 - hx, hy1 - hy))
            )
    return tiles


def tile_meta(
    parent: str, t: Tile, width: int, height: int, overlap: int, parent_uri: str
) -> dict[str, Any]:
    """The ``tile`` field of a tile ref."""
    return {
        "parent": parent,
        "parent_uri": parent_uri,
        "row": t.row,
        "col": t.col,
        "rows": t.rows,
        "cols": t.cols,
        "core": t.core.as_list(),
        "halo": t.halo.as_list(),
        "overlap": overlap,
        "width": width,
        "height": height,
    }


def tile_from_meta(meta: Mapping[str, Any]) -> Tile:
    """The Tile described by a ref's ``tile`` field (raises KeyError/TypeError/ValueError)."""
    core = Box(*(int(v) for v in meta["core"]))
    halo = Box(*(int(v) for v in meta["halo"]))
    if not (
        halo.x <= core.x
        and halo.y <= core.y
        and core.x + core.w <= halo.x + halo.w
        and core.y + core.h <= halo.y + halo.h
        and core.w > 0
        and core.h > 0
    ):
        raise ValueError(f"tile core {core.as_list()} is not inside its halo {halo.as_list()}")
    return Tile(
        int(meta["row"]), int(meta["col"]), int(meta["rows"]), int(meta["cols"]), core, halo
    )


def tile_id(parent: str, row: int, col: int) -> str:
    """The id of a tile ref: ``{parent}~r{row}c{col}``."""
    return f"{parent}~r{row}c{col}"


def tile_index(meta: Mapping[str, Any]) -> int:
    """Row-major grid position of a ``tile`` field (raises KeyError/TypeError/ValueError)."""
    return int(meta["row"]) * int(meta["cols"]) + int(meta["col"])


def tile_parent(meta: Mapping[str, Any] | None) -> str | None:
    """The parent id named by a ``tile`` field, if it is one."""
    if not meta:
        return None
    parent = meta.get("parent")
    return parent if isinstance(parent, str) else None
