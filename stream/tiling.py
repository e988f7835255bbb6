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


#: Longest parent id a ``tile`` field may name (as long as a ref's id may be).
MAX_PARENT_CHARS = 4096

#: Largest image side a ``tile`` field may describe (OpenCV's sizes are C ints).
MAX_SIDE = 2**31 - 1


def _int(meta: Mapping[str, Any], name: str, low: int, high: int) -> int:
    """``meta[name]``, an int in ``[low, high]``; ValueError naming the field."""
    if name not in meta:
        raise ValueError(f"tile field {name!r} is missing")
    value = meta[name]
    # ``type() is int`` also refuses bools, floats and numerals in strings:
    # imgstream writes ints, and anything else is not a tile field it wrote.
    if type(value) is not int:
        raise ValueError(f"tile field {name!r} must be an integer, got {_show(value)}")
    if not low <= value <= high:
        raise ValueError(f"tile field {name!r} must be in [{low}, {high}], got {_show(value)}")
    return value


def _box(meta: Mapping[str, Any], name: str) -> Box:
    value = meta.get(name)
    if not (
        isinstance(value, (list, tuple))
        and len(value) == 4
        and all(type(v) is int and 0 <= v <= MAX_SIDE for v in value)
    ):
        raise ValueError(
            f"tile field {name!r} must be [x, y, w, h] of integers in [0, {MAX_SIDE}],"
            f" got {_show(value)}"
        )
    return Box(*value)


def _show(value: object) -> str:
    return repr(value)[:40]


def tile_from_meta(meta: object) -> Tile:
    """The Tile a ``tile`` field describes, every field checked; else ValueError.

    The field is what :func:`tile_meta` writes: ``parent`` (a non-empty
    string), ``row``/``col`` inside a ``rows`` x ``cols`` grid of an image of
    ``width`` x ``height`` pixels (at most one tile per pixel), ``core`` inside
    ``halo`` inside the image, optional ``overlap`` (not negative) and
    ``parent_uri`` (a string). Anything else raises ValueError with the first
    reason: a worker makes the ref a ``bad_message`` failure, the aggregator
    skips the result. Nothing else is raised, whatever the input.
    """
    if not isinstance(meta, Mapping):
        raise ValueError(f"tile field must be an object, got {type(meta).__name__}")
    parent = meta.get("parent")
    if not isinstance(parent, str) or not parent:
        raise ValueError(f"tile field 'parent' must be a non-empty string, got {_show(parent)}")
    if len(parent) > MAX_PARENT_CHARS:
        raise ValueError(
            f"tile field 'parent' is {len(parent)} characters, over {MAX_PARENT_CHARS}"
        )
    parent_uri = meta.get("parent_uri")
    if parent_uri is not None and not isinstance(parent_uri, str):
        raise ValueError(f"tile field 'parent_uri' must be a string, got {_show(parent_uri)}")
    width = _int(meta, "width", 1, MAX_SIDE)
    height = _int(meta, "height", 1, MAX_SIDE)
    # Every core holds at least one pixel: no grid has more rows than the image.
    rows = _int(meta, "rows", 1, height)
    cols = _int(meta, "cols", 1, width)
    row = _int(meta, "row", 0, rows - 1)
    col = _int(meta, "col", 0, cols - 1)
    if "overlap" in meta:
        _int(meta, "overlap", 0, MAX_SIDE)
    core, halo = _box(meta, "core"), _box(meta, "halo")
    if not (
        halo.x <= core.x
        and halo.y <= core.y
        and core.x + core.w <= halo.x + halo.w
        and core.y + core.h <= halo.y + halo.h
        and core.w > 0
        and core.h > 0
    ):
        raise ValueError(f"tile core {core.as_list()} is not inside its halo {halo.as_list()}")
    if halo.x + halo.w > width or halo.y + halo.h > height:
        raise ValueError(f"tile halo {halo.as_list()} is not inside the {width}x{height} image")
    return Tile(row, col, rows, cols, core, halo)


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


@dataclass(frozen=True)
class TileView:
    """Where a tile image sits: its core (in tile coordinates) and its origin in the parent."""

    core: Box
    origin_x: int
    origin_y: int

    def _owns(self, cx: float, cy: float) -> bool:
        c = self.core
        return c.x <= cx < c.x + c.w and c.y <= cy < c.y + c.h

    def to_parent(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Detections in parent coordinates, kept only where their centre is in the core.

        An object seen in two overlapping tiles is reported by the one tile
        whose core holds its centre, so seams do not duplicate it.
        """
        out = dict(data)
        ox, oy = self.origin_x, self.origin_y
        if "boxes" in data:
            kept = [
                [x + ox, y + oy, w, h]
                for x, y, w, h in data["boxes"]
                if self._owns(x + w / 2, y + h / 2)
            ]
            out["boxes"] = kept
            if "count" in data:
                out["count"] = len(kept)
        if data.get("points"):
            pts = data["points"]
            cx = sum(p[0] for p in pts) / len(pts)
            cy = sum(p[1] for p in pts) / len(pts)
            if self._owns(cx, cy):
                out["points"] = [[p[0] + ox, p[1] + oy] for p in pts]
            else:
                out.update(points=[], found=False, text="")
        return out
