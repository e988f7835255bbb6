"""Change over time, per source: motion detection and near-duplicate frames.

Both are stateful: they remember the past of the frame's source (its
``source`` field), and the worker runs a source's frames through them in
order, with the state snapshotted at each commit and restored on assignment
(:mod:`imgstream.commits.state`), so the outputs equal one sequential pass over the
frames.

``motion``, exactly (so it can be checked against another implementation):

- ``small`` is the frame resized with ``INTER_AREA`` to ``width`` pixels wide
  (height ``int(h * width / w + 0.5)``) if it is wider, else the frame;
  ``g = GaussianBlur(gray(small), (blur, blur), 0)`` (gray as ``gray``:
  ``cvtColor(small, COLOR_BGR2GRAY)`` for a colour frame);
- a source's first frame: the background is ``g`` as float32; the output is
  ``{"first": true, "ratio": 0.0, "boxes": []}``;
- otherwise ``diff = absdiff(g, convertScaleAbs(background))``,
  ``mask = threshold(diff, threshold, 255, THRESH_BINARY)``, ``mask =
  dilate(mask, None, iterations=2)``; the external contours
  (``CHAIN_APPROX_SIMPLE``) with ``contourArea >= min_area`` give ``boxes``,
  their ``boundingRect`` as ``[x, y, w, h]`` in ``small``'s coordinates,
  sorted; ``ratio = round(countNonZero(mask) / mask.size, 6)``; then
  ``accumulateWeighted(g, background, alpha)``;
- every output also holds ``scale``, the factor from ``small`` back to the
  frame (``w / small_w``), and ``kept``.

``action=draw`` draws the boxes, scaled to the frame, in green;
``action=gate`` keeps only frames with a box: the others write no output
image (``kept: false``; their result record still comes).

``dedupe`` marks a frame whose 64-bit perceptual hash (``phash``) is within
``bits`` of the last *kept* frame of its source as a duplicate: it writes no
output image and does not replace the kept hash.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np

from imgstream._cv import cv2
from imgstream.ops.builtin.analysis import phash_bits
from imgstream.ops.builtin.color import as_gray
from imgstream.ops.builtin.filters import _odd
from imgstream.ops.decorator import Arg, op
from imgstream.ops.registry import Image

#: Colour of drawn motion boxes (BGR).
BOX_COLOUR = (0, 255, 0)


@op(
    "motion",
    equals=(
        "a running-average background per source: ``cv2.accumulateWeighted``, "
        "``cv2.absdiff``, ``cv2.threshold``, ``cv2.dilate``, ``cv2.findContours`` (the exact "
        "definition is on Per-source state)"
    ),
    kind="analysis",
    stateful=True,
    check=_odd("motion", key="blur"),
)
def motion(
    img: Image,
    state: dict[str, Any],
    *,
    width: Annotated[int, Arg("analyse at this width (smaller frames as they are)", min=8)] = 320,
    blur: Annotated[int, Arg("Gaussian kernel size (odd)", min=1, max=255)] = 21,
    alpha: Annotated[float, Arg("background learning rate", min=0.0, max=1.0)] = 0.05,
    threshold: Annotated[int, Arg("difference that counts as change", min=0, max=255)] = 25,
    min_area: Annotated[
        int, Arg("smallest moving region, in pixels of the small frame", min=0)
    ] = 100,
    action: Literal["none", "draw", "gate"] = "none",
) -> Any:
    """Moving regions against a running-average background of the frame's source.

    Output: ``first`` (the source's first frame), ``ratio`` (the changed
    fraction of the small frame), ``boxes`` (``[x, y, w, h]`` in the small
    frame), ``scale`` (small frame -> frame) and ``kept``. See the module text
    for the exact definition.
    """
    h, w = img.shape[:2]
    if w > width:
        small = cv2.resize(img, (width, int(h * width / w + 0.5)), interpolation=cv2.INTER_AREA)
    else:
        small = img
    scale = w / small.shape[1]
    g = cv2.GaussianBlur(as_gray(small), (blur, blur), 0)
    background = state.get("background")
    if background is None or background.shape != g.shape:
        state["background"] = g.astype(np.float32)
        data: dict[str, Any] = {"first": True, "ratio": 0.0, "boxes": []}
    else:
        diff = cv2.absdiff(g, cv2.convertScaleAbs(background))
        _, mask = cv2.threshold(diff, threshold, 255, cv2.THRESH_BINARY)
        mask = cv2.dilate(mask, None, iterations=2)  # type: ignore[call-overload]
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes = sorted(
            [int(v) for v in cv2.boundingRect(c)]
            for c in contours
            if cv2.contourArea(c) >= min_area
        )
        ratio = round(cv2.countNonZero(mask) / mask.size, 6)
        cv2.accumulateWeighted(g, background, alpha)
        data = {"first": False, "ratio": ratio, "boxes": boxes}
    data["scale"] = scale
    data["kept"] = action != "gate" or bool(data["boxes"])
    if action == "draw" and data["boxes"]:
        img = img.copy()
        for x, y, bw, bh in data["boxes"]:
            top_left = (int(x * scale), int(y * scale))
            bottom_right = (int((x + bw) * scale), int((y + bh) * scale))
            cv2.rectangle(img, top_left, bottom_right, BOX_COLOUR, 2)
    return img, data


@op(
    "dedupe",
    equals=(
        "``phash``, against the last kept frame of the source: within ``bits`` bits it is a "
        "duplicate (no output image)"
    ),
    kind="analysis",
    stateful=True,
)
def dedupe(
    img: Image,
    state: dict[str, Any],
    *,
    bits: Annotated[
        int, Arg("hashes this many bits apart or fewer are duplicates", min=0, max=64)
    ] = 6,
) -> dict[str, Any]:
    """Near-duplicate frames of a source: within ``bits`` of the last kept frame's phash.

    Output: ``duplicate``, ``hash`` (16 hex digits), ``distance`` to the last
    kept frame (None for a source's first) and ``kept``. A duplicate writes no
    output image.
    """
    value = phash_bits(img)
    last = state.get("hash")
    distance = None if last is None else (value ^ int(last, 16)).bit_count()
    duplicate = distance is not None and distance <= bits
    if not duplicate:
        state["hash"] = f"{value:016x}"
    return {
        "duplicate": duplicate,
        "hash": f"{value:016x}",
        "distance": distance,
        "kept": not duplicate,
    }
