"""Text detection for ``ocr``: PP-OCR's DB (differentiable binarisation) model, around it.

Pure functions on numpy arrays, no ONNX Runtime:

* :func:`det_size` — the detector's input size: the image scaled down (never
  up) so its longer side is at most ``limit_side``, each side rounded to a
  multiple of 32 (the network's stride), as PaddleOCR's ``limit_type=max``.
* :func:`det_input` — BGR pixels to the model's NCHW float input,
  ``(x / 255 - 0.5) / 0.5`` (PP-OCR's det normalisation, on BGR).
* :func:`db_boxes` — DB post-processing of one probability map: threshold,
  2x2 dilation, contours, each contour's minimum-area rectangle scored by the
  mean probability inside it, grown by ``area * unclip_ratio / perimeter``
  (pyclipper's polygon offset, round joins), mapped back to the image and
  ordered top-left, top-right, bottom-right, bottom-left. The defaults are
  rapidocr 3.x's (``thresh 0.3``, ``box_thresh 0.5``, ``unclip_ratio 1.6``).
* :func:`reading_order` — boxes top to bottom, then left to right on a line.
* :func:`crop_quad` — a box's pixels, perspective-warped upright (a crop at
  least 1.5 times taller than wide is turned 90°, like PaddleOCR's).

Written here rather than imported from rapidocr: rapidocr's classes pull in
its logging set-up (a handler installed at import) and shapely for two
numbers OpenCV gives (polygon area and perimeter); the boxes are the same
(``benchmarks/bench_infer.py`` compares them on the same maps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imgstream._cv import cv2

Array = np.ndarray[Any, Any]

#: Boxes whose tops are closer than this many pixels are on one line of text.
LINE_TOLERANCE_PX = 10


@dataclass(frozen=True)
class DbParams:
    """DB post-processing settings (rapidocr 3.x's defaults)."""

    thresh: float = 0.3
    box_thresh: float = 0.5
    unclip_ratio: float = 1.6
    max_candidates: int = 1000
    min_size: int = 3
    dilate: bool = True


def det_size(height: int, width: int, limit_side: int) -> tuple[int, int]:
    """(height, width) of the detector's input for an image of that size."""
    ratio = min(1.0, limit_side / max(height, width))
    h = max(32, round(height * ratio / 32) * 32)
    w = max(32, round(width * ratio / 32) * 32)
    return h, w


def det_input(bgr: Array, size: tuple[int, int], out: Array) -> None:
    """Write one BGR uint8 image, resized to ``size`` (h, w), into ``out`` (3, h, w) float32."""
    h, w = size
    img = bgr if bgr.shape[:2] == (h, w) else cv2.resize(bgr, (w, h))
    np.multiply(img.transpose(2, 0, 1), np.float32(1 / 127.5), out=out, dtype=np.float32)
    out -= np.float32(1.0)


def db_boxes(
    prob: Array, src_height: int, src_width: int, params: DbParams | None = None
) -> list[tuple[Array, float]]:
    """Text boxes (4x2 float32, image coordinates) and their scores from one probability map."""
    p = params if params is not None else DbParams()
    height, width = prob.shape
    mask: Array = (prob > p.thresh).astype(np.uint8)
    if p.dilate:
        mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    sx, sy = src_width / width, src_height / height
    found: list[tuple[Array, float]] = []
    for contour in contours[: p.max_candidates]:
        points, side = _mini_box(contour)
        if side < p.min_size:
            continue
        score = _box_score(prob, points)
        if score < p.box_thresh:
            continue
        grown = _unclip(points, p.unclip_ratio)
        if grown is None:
            continue
        box, side = _mini_box(grown)
        if side < p.min_size + 2:
            continue
        box[:, 0] = np.clip(np.round(box[:, 0] * sx), 0, src_width - 1)
        box[:, 1] = np.clip(np.round(box[:, 1] * sy), 0, src_height - 1)
        box = order_quad(box)
        if np.linalg.norm(box[0] - box[1]) <= 3 or np.linalg.norm(box[0] - box[3]) <= 3:
            continue
        found.append((box, float(score)))
    return found


def _mini_box(contour: Array) -> tuple[Array, float]:
    rect = cv2.minAreaRect(contour)
    return order_quad(cv2.boxPoints(rect)), float(min(rect[1]))


def order_quad(points: Array) -> Array:
    """Four points as top-left, top-right, bottom-right, bottom-left (float32)."""
    pts = np.asarray(points, dtype=np.float32).reshape(4, 2)
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def _box_score(prob: Array, box: Array) -> float:
    h, w = prob.shape
    xmin = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask: Array = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    shifted: Array = (box - np.array([xmin, ymin], dtype=np.float32)).astype(np.int32)
    cv2.fillPoly(mask, [shifted.reshape(-1, 2)], 1)
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def _unclip(box: Array, ratio: float) -> Array | None:
    import pyclipper

    area = abs(cv2.contourArea(box))
    length = cv2.arcLength(box, True)
    if length == 0:
        return None
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(
        [tuple(int(v) for v in pt) for pt in box], pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON
    )
    paths = offset.Execute(area * ratio / length)
    if not paths:
        return None
    return np.concatenate([np.asarray(path, dtype=np.float32) for path in paths]).reshape(-1, 1, 2)


def reading_order(boxes: list[Array]) -> list[int]:
    """Indices of ``boxes`` top to bottom, and left to right within a line."""
    if not boxes:
        return []
    tops = np.array([b[0, 1] for b in boxes])
    lefts = np.array([b[0, 0] for b in boxes])
    by_y = np.argsort(tops, kind="stable")
    line = np.concatenate([[0], np.cumsum(np.diff(tops[by_y]) >= LINE_TOLERANCE_PX)])
    return [int(by_y[i]) for i in np.lexsort((lefts[by_y], line))]


def crop_quad(img: Array, quad: Array) -> Array:
    """The pixels inside ``quad``, warped to an upright rectangle."""
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(
        img, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if crop.shape[0] >= 1.5 * crop.shape[1]:
        crop = np.rot90(crop)
    return crop


def bounding_box(quad: Array) -> list[int]:
    """``[x, y, w, h]`` of a quad (integers, like the detection operations' boxes)."""
    x0, y0 = np.floor(quad.min(axis=0))
    x1, y1 = np.ceil(quad.max(axis=0))
    return [int(x0), int(y0), int(x1 - x0) + 1, int(y1 - y0) + 1]


def aspect(crop: Array) -> float:
    """Width over height of a crop (at least a sliver)."""
    return float(crop.shape[1]) / max(int(crop.shape[0]), 1)


__all__ = [
    "DbParams",
    "aspect",
    "bounding_box",
    "crop_quad",
    "db_boxes",
    "det_input",
    "det_size",
    "order_quad",
    "reading_order",
]
