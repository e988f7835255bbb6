"""The example operations: one of each kind.

* ``posterize`` (image): each channel value v becomes
  ``(v * levels // 256) * 255 // (levels - 1)``, ``levels`` evenly spaced
  values from 0 to 255;
* ``mean_color`` (analysis): the mean of each channel, rounded;
* ``batch_stats`` (batch): called once with the images of a micro-batch; it
  records how many images the call saw and each image's brightness rank in it.

Each function's keyword-only arguments are its parameters: their annotations
and defaults are the types, choices, ranges and defaults that imgstream
validates a spec against (``posterize:levels=4``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np

import imgstream
from imgstream import Arg


@imgstream.op(
    "posterize", footprint=0, equals="a lookup table, (v * levels // 256) * 255 // (levels - 1)"
)
def posterize(
    img: np.ndarray,
    *,
    levels: Annotated[int, Arg("values per channel", min=2, max=256)] = 4,
) -> np.ndarray:
    """Reduce every channel to ``levels`` evenly spaced values."""
    lut = (np.arange(256) * levels // 256) * 255 // (levels - 1)
    return lut.astype(np.uint8)[img]


@imgstream.op("mean_color", kind="analysis", footprint=0, tiles="core")
def mean_color(
    img: np.ndarray,
    *,
    digits: Annotated[int, Arg("decimals kept", min=0, max=6)] = 2,
) -> dict[str, Any]:
    """The mean of each channel (B, G, R order for colour images)."""
    planes = img.reshape(-1, 1 if img.ndim == 2 else img.shape[2]).astype(np.float64)
    return {"mean": [round(float(m), digits) for m in planes.mean(axis=0)]}


@imgstream.op("batch_stats", kind="batch")
def batch_stats(
    images: list[np.ndarray],
    *,
    order: Literal["bright", "dark"] = "bright",
) -> list[dict[str, Any]]:
    """How many images the call saw, and each image's brightness rank among them.

    A batch operation is where micro-batching pays: a model runs once over
    the stacked images of a batch. This one only looks at them together.
    """
    means = [float(img.mean()) for img in images]
    ranked = sorted(range(len(images)), key=lambda i: means[i], reverse=order == "bright")
    rank = {i: r for r, i in enumerate(ranked)}
    return [
        {"batch_size": len(images), "rank": rank[i], "brightness": round(means[i], 3)}
        for i in range(len(images))
    ]
