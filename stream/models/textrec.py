"""Text recognition for ``ocr``: PP-OCR's CTC recogniser, batched across a micro-batch.

Pure functions on numpy arrays, no ONNX Runtime:

* :func:`plan_batches` — PaddleOCR's batching: every text crop of the call
  (all images of a micro-batch together) sorted by width/height ratio, cut
  into batches of at most ``max_batch`` crops, each batch as wide as its
  widest crop scaled to the model's height (at least ``min_width``), narrower
  crops padded on the right. Sorting keeps the padding small.
* :func:`rec_input` — one batch as the model's NCHW float input: each crop
  (BGR) resized to height 48 keeping its ratio, ``(x / 255 - 0.5) / 0.5``,
  zeros (mid-grey) to the right.
* :class:`CtcDecoder` — greedy CTC decoding: the best class at each step,
  repeats merged, blanks dropped; the score is the mean probability of the
  characters kept (0 for an empty text). The character set is the one stored
  in the model's own metadata (``character``, one per line) with the blank
  first and a space last, as rapidocr and PaddleOCR build it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgstream._cv import cv2

Array = np.ndarray[Any, Any]

#: The recogniser's input height (PP-OCR rec: 3 x 48 x W).
REC_HEIGHT = 48


@dataclass(frozen=True)
class RecBatch:
    """Which crops go together, and how wide their input is."""

    indices: tuple[int, ...]
    width: int


def plan_batches(
    ratios: list[float], max_batch: int, min_width: int, height: int = REC_HEIGHT
) -> list[RecBatch]:
    """Crops (by their width/height ratios) in batches of similar ratio (see the module doc)."""
    order = sorted(range(len(ratios)), key=lambda i: ratios[i])
    batches = []
    for start in range(0, len(order), max_batch):
        chunk = tuple(order[start : start + max_batch])
        widest = max(ratios[i] for i in chunk)
        batches.append(RecBatch(chunk, max(min_width, math.ceil(height * widest))))
    return batches


def rec_input(crops: list[Array], width: int, height: int = REC_HEIGHT) -> Array:
    """The crops (BGR uint8) as one (n, 3, height, width) float32 batch."""
    batch = np.zeros((len(crops), 3, height, width), dtype=np.float32)
    for i, crop in enumerate(crops):
        w = min(width, max(1, math.ceil(height * crop.shape[1] / max(crop.shape[0], 1))))
        resized = cv2.resize(crop, (w, height))
        target = batch[i, :, :, :w]
        np.multiply(resized.transpose(2, 0, 1), np.float32(1 / 127.5), out=target)
        target -= np.float32(1.0)
    return batch


class CtcDecoder:
    """Greedy CTC decoding over the model's character set."""

    def __init__(self, characters: list[str]) -> None:
        self.characters = ["", *characters, " "]
        self._table = np.array(self.characters, dtype=object)

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> CtcDecoder:
        """From the ``character`` entry of the model's metadata (KeyError when absent)."""
        return cls(metadata["character"].splitlines())

    def __len__(self) -> int:
        return len(self.characters)

    def decode(self, probs: Array) -> list[tuple[str, float]]:
        """(text, score) for each row of ``probs`` (n, steps, classes)."""
        best = probs.argmax(axis=2)
        conf = np.take_along_axis(probs, best[:, :, None], axis=2)[:, :, 0]
        keep = best != 0
        keep[:, 1:] &= best[:, 1:] != best[:, :-1]
        out = []
        for row in range(len(best)):
            chosen = keep[row]
            if not chosen.any():
                out.append(("", 0.0))
                continue
            text = "".join(self._table[best[row][chosen]])
            out.append((text, round(float(conf[row][chosen].mean()), 5)))
        return out
