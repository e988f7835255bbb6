"""Pipeline specs: parse, validate, canonicalise, hash, and run.

A spec chains operations with ``|`` and gives parameters after a colon::

    gray|clahe:clip=2.0,tile=8|resize:w=640

Parsing validates everything against a registry, so a bad spec fails at
start-up with a message that names the operation and lists what is valid.
The canonical form lists every parameter (defaults filled in, sorted by
name), so parameter order and spelled-out defaults do not change the hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imgstream.errors import OP_ERROR, ImageError, SpecError
from imgstream.ops.registry import Image, Operation, Registry
from imgstream.tiling import Box


@dataclass(frozen=True)
class Step:
    """One operation with its validated parameters."""

    op: Operation
    params: Mapping[str, Any]

    def canonical(self) -> str:
        """``name`` or ``name:k=v,...`` with every parameter, sorted."""
        if not self.params:
            return self.op.name
        body = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(self.params.items()) if v is not None)
        return f"{self.op.name}:{body}" if body else self.op.name


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


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


@dataclass(frozen=True)
class Pipeline:
    """A validated chain of operations."""

    steps: tuple[Step, ...]

    @property
    def canonical(self) -> str:
        """The canonical spec text."""
        return "|".join(step.canonical() for step in self.steps)

    @property
    def hash(self) -> str:
        """A short, stable hash of the canonical spec (12 hex digits)."""
        return hashlib.sha256(self.canonical.encode("utf-8")).hexdigest()[:12]

    def footprint(self) -> int | None:
        """Pixels of halo a tile needs so its core equals the whole-image result (None: never)."""
        total = 0
        for step in self.steps:
            r = step.op.footprint(step.params)
            if r is None:
                return None
            total += r
        return total

    def whole_image_steps(self) -> list[str]:
        """Steps that need the whole image and so cannot run on tiles."""
        return [s.canonical() for s in self.steps if s.op.footprint(s.params) is None]

    def run(self, img: Image, tile: TileView | None = None) -> tuple[Image, dict[str, Any]]:
        """Apply every step; return the image and analysis outputs by step name.

        An operation that fails raises ImageError(``op_error``) naming the step.
        """
        outputs: dict[str, Any] = {}
        for step in self.steps:
            try:
                if tile is not None and step.op.tiles == "core":
                    c = tile.core
                    _, data = step.op.fn(img[c.y : c.y + c.h, c.x : c.x + c.w], step.params)
                else:
                    img, data = step.op.fn(img, step.params)
                    if tile is not None and step.op.tiles == "boxes" and data is not None:
                        data = tile.to_parent(data)
            except ImageError:
                raise
            except Exception as exc:  # one bad image must not take the batch down
                raise ImageError(OP_ERROR, f"{step.canonical()}: {exc}") from exc
            if data is not None:
                key = step.op.name
                n = 2
                while key in outputs:
                    key = f"{step.op.name}#{n}"
                    n += 1
                outputs[key] = dict(data)
        return img, outputs


def parse_spec(spec: str, registry: Registry) -> Pipeline:
    """Parse and validate a spec; raise :class:`SpecError` naming what is wrong."""
    text = spec.strip()
    if not text:
        raise SpecError("empty pipeline spec; give at least one operation, e.g. 'gray'")
    steps = []
    for position, part in enumerate(text.split("|"), start=1):
        part = part.strip()
        if not part:
            raise SpecError(f"empty step at position {position} in {spec!r}")
        name, _, body = part.partition(":")
        op = registry.get(name.strip())
        params = op.defaults()
        seen: set[str] = set()
        if body.strip():
            for item in body.split(","):
                key, eq, value = item.partition("=")
                key = key.strip()
                if not eq or not key:
                    raise SpecError(
                        f"operation {op.name!r}: expected key=value, got {item.strip()!r}"
                    )
                if key in seen:
                    raise SpecError(f"operation {op.name!r}: parameter {key!r} given twice")
                seen.add(key)
                params[key] = op.param(key).parse(op.name, value.strip())
        elif _:
            raise SpecError(f"operation {op.name!r}: nothing after ':'")
        if op.check is not None:
            op.check(params)
        steps.append(Step(op, params))
    return Pipeline(tuple(steps))
