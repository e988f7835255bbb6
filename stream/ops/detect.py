"""Detection: faces and licence plates (OpenCV's bundled Haar cascades), QR codes.

Cascades are loaded once per thread (a ``CascadeClassifier`` is not safe to
share between threads) and reused for every image. Boxes are ``[x, y, w, h]``,
exactly what ``detectMultiScale(gray, scale, neighbors, minSize=(min, min))``
returns on the BT.601 gray image. ``action=draw`` outlines each box in green,
``action=blur`` anonymises: each box is replaced by a strong Gaussian blur of
itself, and no pixel outside the boxes changes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from imgstream._cv import cv2
from imgstream.ops.color import as_gray, channels, to_uint8
from imgstream.ops.registry import Image, Operation, Param

FACE_CASCADE = "haarcascade_frontalface_default.xml"
PLATE_CASCADE = "haarcascade_russian_plate_number.xml"

_local = threading.local()


def cascade(name: str) -> Any:
    """This thread's classifier for a bundled cascade file."""
    cache: dict[str, Any] = _local.__dict__.setdefault("cascades", {})
    if name not in cache:
        path = os.path.join(cv2.data.haarcascades, name)  # type: ignore[attr-defined]
        classifier = cv2.CascadeClassifier(path)
        if classifier.empty():
            raise RuntimeError(f"cannot load the cascade {path}")
        cache[name] = classifier
    return cache[name]


def detect_boxes(
    img: Image, name: str, scale: float, neighbors: int, min_size: int
) -> list[list[int]]:
    """Boxes from a bundled cascade on the gray image."""
    found = cascade(name).detectMultiScale(
        as_gray(img), scaleFactor=scale, minNeighbors=neighbors, minSize=(min_size, min_size)
    )
    return [[int(v) for v in box] for box in found]


def apply_action(img: Image, boxes: list[list[int]], action: str) -> Image:
    """Draw or blur the boxes on a copy of the image (none: the image itself)."""
    if action == "none" or not boxes:
        return img
    out = to_uint8(img).copy()
    for x, y, w, h in boxes:
        if action == "draw":
            colour = 255 if channels(out) == 1 else (0, 255, 0)
            cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), colour, 2)
        else:
            region = out[y : y + h, x : x + w]
            sigma = max(w, h) / 6.0
            out[y : y + h, x : x + w] = cv2.GaussianBlur(region, (0, 0), sigma)
    return out


def _detector(name: str) -> Any:
    def run(img: Image, params: Mapping[str, Any]) -> tuple[Image, Mapping[str, Any]]:
        boxes = detect_boxes(img, name, params["scale"], params["neighbors"], params["min"])
        return apply_action(img, boxes, params["action"]), {"count": len(boxes), "boxes": boxes}

    return run


def qr(img: Image, params: Mapping[str, Any]) -> tuple[Image, Mapping[str, Any]]:
    """``cv2.QRCodeDetector().detectAndDecode``: decoded text and corner points."""
    text, points, _ = cv2.QRCodeDetector().detectAndDecode(to_uint8(img))
    corners = [] if points is None else np.asarray(points).reshape(-1, 2).round(2).tolist()
    return img, {"found": points is not None, "text": text or "", "points": corners}


def _params(neighbors: int, min_size: int) -> tuple[Param, ...]:
    return (
        Param("scale", float, 1.1, "scaleFactor between pyramid levels", min=1.001, max=3.0),
        Param("neighbors", int, neighbors, "minNeighbors", min=0, max=100),
        Param("min", int, min_size, "minSize (square, pixels)", min=1),
        Param(
            "action",
            str,
            "none",
            "none, draw boxes, or blur them",
            choices=("none", "draw", "blur"),
        ),
    )


OPERATIONS = (
    Operation(
        "faces",
        _detector(FACE_CASCADE),
        "frontal faces (Haar cascade)",
        _params(5, 30),
        kind="analysis",
        tiles="boxes",
    ),
    Operation(
        "plates",
        _detector(PLATE_CASCADE),
        "licence plates (Haar cascade)",
        _params(3, 20),
        kind="analysis",
        tiles="boxes",
    ),
    Operation("qr", qr, "QR code: decoded text and corners", kind="analysis", tiles="boxes"),
)
