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
from typing import Annotated, Any, Literal

import numpy as np

from imgstream._cv import cv2
from imgstream.ops.color import as_gray, channels, to_uint8
from imgstream.ops.decorator import Arg, op
from imgstream.ops.registry import Image

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


Scale = Annotated[float, Arg("scaleFactor between pyramid levels", min=1.001, max=3.0)]
Neighbors = Annotated[int, Arg("minNeighbors", min=0, max=100)]
MinSize = Annotated[int, Arg("minSize (square, pixels)", min=1)]
Action = Annotated[Literal["none", "draw", "blur"], Arg("none, draw boxes, or blur them")]


def _detect(
    img: Image, name: str, scale: float, neighbors: int, min_size: int, action: str
) -> tuple[Image, dict[str, Any]]:
    boxes = detect_boxes(img, name, scale, neighbors, min_size)
    return apply_action(img, boxes, action), {"count": len(boxes), "boxes": boxes}


@op("faces", kind="analysis", help="frontal faces (Haar cascade)", footprint=0, tiles="boxes")
def faces(
    img: Image,
    *,
    scale: Scale = 1.1,
    neighbors: Neighbors = 5,
    min: MinSize = 30,
    action: Action = "none",
) -> tuple[Image, dict[str, Any]]:
    """Frontal faces: the face cascade's boxes, drawn or blurred on request."""
    return _detect(img, FACE_CASCADE, scale, neighbors, min, action)


@op("plates", kind="analysis", help="licence plates (Haar cascade)", footprint=0, tiles="boxes")
def plates(
    img: Image,
    *,
    scale: Scale = 1.1,
    neighbors: Neighbors = 3,
    min: MinSize = 20,
    action: Action = "none",
) -> tuple[Image, dict[str, Any]]:
    """Licence plates: the plate cascade's boxes, drawn or blurred on request."""
    return _detect(img, PLATE_CASCADE, scale, neighbors, min, action)


@op("qr", kind="analysis", help="QR code: decoded text and corners", footprint=0, tiles="boxes")
def qr(img: Image) -> dict[str, Any]:
    """``cv2.QRCodeDetector().detectAndDecode``: decoded text and corner points."""
    text, points, _ = cv2.QRCodeDetector().detectAndDecode(to_uint8(img))
    corners = [] if points is None else np.asarray(points).reshape(-1, 2).round(2).tolist()
    return {"found": points is not None, "text": text or "", "points": corners}
