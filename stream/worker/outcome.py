"""What became of one image: an :class:`Outcome` (its record), or a :class:`Prepared` image.

:class:`~imgstream.worker.processor.ImageProcessor` makes both; the emitter sends an
outcome's record, and a batch pipeline (:mod:`imgstream.worker.batchrun`) holds the
prepared images of a micro-batch until its batch steps have run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from imgstream.schema.records import Failure, ImageRef, Message, Result
from imgstream.tiling import TileView


@dataclass(frozen=True)
class Outcome:
    """What became of one message."""

    message: Message
    record: Result | Failure
    pixels: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    @property
    def ok(self) -> bool:
        """True for a result, False for a failure."""
        return isinstance(self.record, Result)


@dataclass
class Prepared:
    """An image decoded and ready for the pipeline, with what its record will need.

    ``image`` is replaced by the pipeline's output, then dropped once encoded.
    """

    message: Message
    ref: ImageRef
    batch_id: str
    image: Any
    view: TileView | None
    width: int
    height: int
    channels: int
    sha: str
    n_in: int
    timings: dict[str, float]
    slot: threading.Lock | None = None

    def release(self) -> None:
        """Give the tile slot back, if this image holds it."""
        if self.slot is not None:
            self.slot.release()
            self.slot = None
