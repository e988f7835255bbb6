"""Tile fusion: a parent image's mosaic and merged analysis from its tiles' results.

When every tile of a parent has a result, :func:`fuse` stitches the tile
outputs into the parent's output (band by band: a 20,000 x 20,000 mosaic never
sits whole in memory), writes it locally or uploads it to the object store,
and merges the tiles' statistics, histograms and detections
(:func:`merge_outputs`) into one ``result`` for the parent. Used by the
:class:`~imgstream.consumers.aggregator.Aggregator`.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from imgstream._cv import cv2
from imgstream.clock import Clock
from imgstream.errors import ImageError
from imgstream.integrate import merge_boxes, merge_hists, merge_stats
from imgstream.io import imaging, png
from imgstream.io.objstore import is_s3
from imgstream.io.storage import output_path, safe_name
from imgstream.io.stores import Outputs, absolute
from imgstream.schema.records import Lineage, Result
from imgstream.tiling import Tile, tile_from_meta

#: Detection outputs whose boxes are merged (de-duplicated across seams).
BOX_KINDS = ("faces", "plates", "contours")
#: A tile output larger than this is not a tile output.
MAX_TILE_OUTPUT_BYTES = 1 << 30


def fuse(
    parent: str,
    phash: str,
    tiles: Sequence[Result],
    *,
    files: Outputs,
    out_dir: str | None,
    clock: Clock,
    worker: str,
    topic: str,
) -> Result:
    """Stitch the tiles' outputs, merge their data; the parent's result record.

    The mosaic goes to its deterministic path under ``out_dir`` (beside the
    first tile's output without one), through ``files``; the record is
    ``worker``'s, with ``topic`` (the results topic) in its lineage.
    """
    meta = tiles[0].tile or {}
    rows, cols = int(meta["rows"]), int(meta["cols"])
    width, height = int(meta["width"]), int(meta["height"])
    by_pos = {(tile.row, tile.col): (t, tile) for t in tiles for tile in [_tile_of(t)]}
    first_output = tiles[0].output_uri or ""
    ext = os.path.splitext(first_output)[1].lstrip(".") or "png"
    source = tiles[0].source
    if out_dir is not None:
        path = output_path(out_dir, phash, source, parent, ext)
    else:
        path = os.path.join(os.path.dirname(first_output), f"{safe_name(parent)}.{ext}")
    channels = _stitch(path, by_pos, rows, cols, width, height, ext, files)
    now = clock.wall_ms()
    ts = min(t.ts for t in tiles)
    timings: dict[str, float] = defaultdict(float)
    for t in tiles:
        for stage, seconds in t.timings.items():
            timings[stage] += float(seconds)
    return Result(
        id=parent,
        uri=meta.get("parent_uri") or "",
        output_uri=absolute(path),
        pipeline=tiles[0].pipeline,
        pipeline_hash=phash,
        width=width,
        height=height,
        channels=channels,
        outputs=merge_outputs(tiles, rows, cols),
        timings={k: round(v, 6) for k, v in timings.items()},
        batch_id="fused",
        worker=worker,
        source=source,
        ts=ts,
        latency_ms=max(0, now - ts),
        lineage=Lineage(
            topic=topic,
            partition=-1,
            offset=-1,
            sha256=None,
            versions=tiles[0].lineage.versions,
            tiles=tuple(t.id for t in tiles),
        ),
        bytes_in=sum(t.bytes_in for t in tiles),
    )


def _tile_of(result: Result) -> Tile:
    """The grid tile a tile result covers (raises ValueError when its field is malformed)."""
    try:
        return tile_from_meta(result.tile or {})
    except (KeyError, TypeError) as exc:
        raise ValueError(f"tile {result.id} has a malformed tile field: {exc}") from None


def _stitch(
    path: str,
    by_pos: Mapping[tuple[int, int], tuple[Result, Tile]],
    rows: int,
    cols: int,
    width: int,
    height: int,
    ext: str,
    files: Outputs,
) -> int:
    """Write the mosaic of the tiles' outputs to ``path`` atomically; its channel count.

    The mosaic is written band by band to a temporary file (beside ``path``,
    or in the temporary folder for an ``s3://`` path), then renamed or
    uploaded: it never sits whole in memory.
    """
    if is_s3(path):
        directory = tempfile.gettempdir()
    else:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    channels = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            writer: png.PngStreamWriter | None = None
            whole: list[np.ndarray] = []
            for r in range(rows):
                pieces = []
                for c in range(cols):
                    t, tile = by_pos[(r, c)]
                    img = _read_output(t.output_uri or "", files)
                    if img is None:
                        raise ValueError(f"cannot read tile output {t.output_uri}")
                    core = tile.core
                    if img.shape[:2] != (core.h, core.w):
                        raise ValueError(
                            f"tile {t.id} output is {img.shape[:2]}, core {core.as_list()}"
                        )
                    pieces.append(img)
                band = np.hstack(pieces)
                channels = 1 if band.ndim == 2 else int(band.shape[2])
                if ext == "png" and band.dtype == np.uint8:
                    if writer is None:
                        writer = png.PngStreamWriter(fh, width, height, channels)
                    writer.write(band)
                else:
                    whole.append(band)
            if writer is not None:
                writer.close()
            else:
                mosaic = np.vstack(whole)
                fh.write(imaging.encode(mosaic, ext, imaging.encode_params(ext)))
        files.upload(path, tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return channels


def _read_output(location: str, files: Outputs) -> np.ndarray | None:
    """A tile's output image, from a file or an object (None when it does not decode)."""
    if not is_s3(location):
        return cv2.imread(location, cv2.IMREAD_UNCHANGED)
    try:
        data = files.read(location, MAX_TILE_OUTPUT_BYTES)
    except ImageError as exc:
        raise ValueError(f"cannot read tile output {location}: {exc.message}") from None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def merge_outputs(tiles: Sequence[Result], rows: int, cols: int) -> dict[str, Any]:
    """The parent's analysis outputs from its tiles' (statistics, histograms, detections)."""
    merged: dict[str, Any] = {}
    names = list(tiles[0].outputs.keys())
    for name in names:
        kind = name.split("#", 1)[0]
        parts = [t.outputs[name] for t in tiles if name in t.outputs]
        if len(parts) != len(tiles):
            continue
        if kind == "stats":
            weights = [t.width * t.height for t in tiles]
            merged[name] = merge_stats(list(zip(weights, parts, strict=True)))
        elif kind == "hist":
            merged[name] = merge_hists(parts)
        elif kind in BOX_KINDS:
            boxes = merge_boxes(b for p in parts for b in p.get("boxes", []))
            merged[name] = {"count": len(boxes), "boxes": boxes}
        elif kind == "qr":
            found = [p for p in parts if p.get("found")]
            merged[name] = found[0] if found else {"found": False, "text": "", "points": []}
    merged["tiles"] = {"rows": rows, "cols": cols, "count": len(tiles)}
    return merged
