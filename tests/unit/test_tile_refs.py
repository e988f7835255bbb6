"""A worker given a tile ref: a malformed ``tile`` field is a ``bad_message`` failure.

The aggregator trusts the ``tile`` field of a tile's result (its parent, grid
and boxes), and a result carries its ref's field as is: so the worker refuses
a ref whose field is malformed, as one failure record, and never writes a
result the aggregator cannot fuse.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from imgstream.clock import FakeClock
from imgstream.config import WorkerConfig
from imgstream.errors import BAD_MESSAGE
from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec
from imgstream.schema.codec import encode
from imgstream.schema.records import Failure, ImageRef, Message, Result
from imgstream.tiling import grid, tile_meta
from imgstream.worker.processor import ImageProcessor
from tests.unit.test_tiling import BAD_TILES


@pytest.fixture
def tile_ref(tmp_path):
    """A processor and a function making the ref of tile r0c1 with a given tile field."""
    root = tmp_path / "in"
    root.mkdir()
    [t] = [t for t in grid(250, 130, 100, 5) if (t.row, t.col) == (0, 1)]
    path = root / "big-r0c1.png"
    cv2.imwrite(str(path), np.full((t.halo.h, t.halo.w), 77, np.uint8))
    config = WorkerConfig(
        bootstrap="fake", out_dir=str(tmp_path / "out"), roots=(str(root),), worker_id="w"
    )
    processor = ImageProcessor(config, parse_spec("gray", build_registry()), FakeClock())

    def process(tile: object) -> Result | Failure:
        raw = {**_ref_dict(str(path)), "tile": tile}
        ref = ImageRef(id="big~r0c1", uri=str(path), ts=0, tile=raw["tile"])
        value = encode(ref) if isinstance(tile, dict) else json.dumps(raw).encode()
        return processor.process(Message("refs", 0, 7, None, value, 0), "b1").record

    return process, tile_meta("big", t, 250, 130, 5, "/big.png")


def _ref_dict(uri: str) -> dict:
    return {"v": 1, "kind": "ref", "id": "big~r0c1", "uri": uri, "ts": 0}


def test_a_valid_tile_ref_gives_a_tile_result(tile_ref) -> None:
    process, meta = tile_ref
    record = process(meta)
    assert isinstance(record, Result), record
    assert record.tile == meta and (record.width, record.height) == (100, 100)


@pytest.mark.parametrize("tile", BAD_TILES.values(), ids=BAD_TILES.keys())
def test_a_ref_with_a_malformed_tile_is_a_bad_message_failure(tile_ref, tile) -> None:
    process, _ = tile_ref
    record = process(tile)
    assert isinstance(record, Failure), record
    assert record.error_type == BAD_MESSAGE
    assert record.id == "big~r0c1" or record.raw_b64 is not None
    assert "tile" in record.error_message
