"""Detection: faces and licence plates (OpenCV's bundled Haar cascades), QR codes.

``plates:read=true`` also reads the text inside each plate box with PP-OCR's
recogniser (:mod:`imgstream.ops.builtin.models`), every box of the micro-batch in a
few batched calls: ``plates`` is a ``batch`` operation that needs the batch
only to read (``batch_when``); without ``read`` each image runs alone, in
parallel, exactly as the analysis it was (same canonical form and hash).

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
from typing import Annotated, Any, Literal

import numpy as np

from imgstream._cv import cv2
from imgstream.ops.builtin.color import as_gray, channels, to_uint8
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


@op(
    "faces",
    equals=(
        "``cv2.CascadeClassifier(haarcascade_frontalface_default.xml).detectMultiScale(gray, "
        "scale, neighbors, minSize=(min, min))``: boxes ``[x, y, w, h]``; ``action=blur`` "
        "anonymises them (no pixel outside a box changes)"
    ),
    kind="analysis",
    help="frontal faces (Haar cascade)",
    footprint=0,
    tiles="boxes",
)
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


def _reads(params: Mapping[str, Any]) -> bool:
    return bool(params.get("read"))


def _plates_footprint(params: Mapping[str, Any]) -> int | None:
    # Text read on a tile would not follow its box when seams drop or move boxes.
    return None if _reads(params) else 0


def _check_plates(params: Mapping[str, Any]) -> None:
    if _reads(params):
        from imgstream.ops.builtin.models import text_reader

        text_reader()  # the recogniser loads at start-up: exit 2 without rapidocr


def _plates_lineage(params: Mapping[str, Any]) -> dict[str, str]:
    if not _reads(params):
        return {}
    from imgstream.ops.builtin.models import runtime_versions, text_reader

    return runtime_versions(text_reader().lineage(), "plates", ("rec_sha256",))


Read = Annotated[bool | None, Arg("read the text in each box (PP-OCR), across the micro-batch")]


@op(
    "plates",
    equals=(
        "``detectMultiScale`` as for ``faces``, with "
        "``haarcascade_russian_plate_number.xml``; ``read=true`` reads the text of each plate"
        " with the recogniser of ``ocr``"
    ),
    kind="batch",
    help="licence plates (Haar cascade); read=true reads their text",
    footprint=_plates_footprint,
    tiles="boxes",
    check=_check_plates,
    lineage=_plates_lineage,
    batch_when=_reads,
)
def plates(
    images: list[Image],
    *,
    scale: Scale = 1.1,
    neighbors: Neighbors = 3,
    min: MinSize = 20,
    action: Action = "none",
    read: Read = None,
) -> list[tuple[Image, dict[str, Any]]]:
    """Licence plates: the plate cascade's boxes, drawn or blurred on request.

    With ``read=true`` each box's text is read (PP-OCR's recogniser, the
    micro-batch's boxes together) from the image before any drawing or
    blurring, and stored as ``texts``, one ``{text, score}`` per box, in the
    order of ``boxes`` (an empty text when nothing is legible). Reading needs
    the whole image: ``read=true`` is refused on tiles.
    """
    found = [detect_boxes(img, PLATE_CASCADE, scale, neighbors, min) for img in images]
    texts: list[list[dict[str, Any]]] | None = None
    if read:
        from imgstream.ops.builtin.models import text_reader

        texts = text_reader().read_in_boxes(images, found)
    out = []
    for i, (img, boxes) in enumerate(zip(images, found, strict=True)):
        data: dict[str, Any] = {"count": len(boxes), "boxes": boxes}
        if texts is not None:
            data["texts"] = texts[i]
        out.append((apply_action(img, boxes, action), data))
    return out


@op(
    "qr",
    equals="``cv2.QRCodeDetector().detectAndDecode``: text and corner points",
    kind="analysis",
    help="QR code: decoded text and corners",
    footprint=0,
    tiles="boxes",
)
def qr(img: Image) -> dict[str, Any]:
    """``cv2.QRCodeDetector().detectAndDecode``: decoded text and corner points."""
    text, points, _ = cv2.QRCodeDetector().detectAndDecode(to_uint8(img))
    corners = [] if points is None else np.asarray(points).reshape(-1, 2).round(2).tolist()
    return {"found": points is not None, "text": text or "", "points": corners}
