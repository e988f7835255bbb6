"""Segmentation: thresholds, morphology, k-means colour quantisation, contours.

``threshold`` works on the BT.601 gray image: ``method=binary`` is
``cv2.threshold(gray, t, 255, THRESH_BINARY)``, ``otsu`` adds
``THRESH_OTSU`` (t is chosen from the histogram), ``adaptive`` is
``cv2.adaptiveThreshold(gray, 255, ADAPTIVE_THRESH_GAUSSIAN_C, THRESH_BINARY,
block, c)``. ``morph`` uses a square kernel of side k on every channel.
``kmeans`` is deterministic: OpenCV's RNG is seeded before every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from imgstream._cv import cv2
from imgstream.errors import SpecError
from imgstream.ops.color import as_gray, channels, to_uint8
from imgstream.ops.registry import Image, Operation, Param, whole_image


def threshold(img: Image, params: Mapping[str, Any]) -> tuple[Image, Mapping[str, Any] | None]:
    """Binary, Otsu or adaptive threshold of the gray image."""
    gray = as_gray(img)
    method = params["method"]
    if method == "adaptive":
        out = cv2.adaptiveThreshold(
            gray,
            255,
            cv2.ADAPTIVE_THRESH_GAUSSIAN_C,
            cv2.THRESH_BINARY,
            params["block"],
            params["c"],
        )
        return out, None
    if method == "otsu":
        _t, out = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        return out, None
    _, out = cv2.threshold(gray, params["t"], 255, cv2.THRESH_BINARY)
    return out, None


def _check_threshold(params: Mapping[str, Any]) -> None:
    if params["block"] % 2 == 0 or params["block"] < 3:
        raise SpecError(
            f"operation 'threshold': parameter 'block' must be odd and >= 3, got {params['block']}"
        )


_MORPH = {
    "open": cv2.MORPH_OPEN,
    "close": cv2.MORPH_CLOSE,
    "erode": cv2.MORPH_ERODE,
    "dilate": cv2.MORPH_DILATE,
}


def morph(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """``cv2.morphologyEx(img, op, getStructuringElement(MORPH_RECT, (k, k)))``."""
    k = params["k"]
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    return cv2.morphologyEx(img, _MORPH[params["op"]], kernel), None


KMEANS_SEED = 12345


def kmeans(img: Image, params: Mapping[str, Any]) -> tuple[Image, Mapping[str, Any]]:
    """Colour quantisation: every pixel replaced by the centre of its k-means cluster."""
    img = to_uint8(img)
    if channels(img) == 4:
        img = img[:, :, :3]
    c = channels(img)
    data = img.reshape(-1, c).astype(np.float32)
    k = min(params["k"], len(data))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    cv2.setRNGSeed(KMEANS_SEED)  # OpenCV's RNG is per thread: seeded right before use
    _compactness, labels, centers = cv2.kmeans(data, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)  # type: ignore[call-overload]
    palette = np.clip(np.rint(centers), 0, 255).astype(np.uint8)
    out = palette[labels.ravel()].reshape(img.shape)
    return out, {"centers": palette.tolist()}


def _binary(img: Image) -> Image:
    gray = as_gray(img)
    values = np.unique(gray)
    if len(values) <= 2 and values[0] == 0:
        return gray
    return cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]


def contours(img: Image, params: Mapping[str, Any]) -> tuple[Image, Mapping[str, Any]]:
    """External contours of a binary image (Otsu-thresholded first if it is not binary)."""
    found, _ = cv2.findContours(_binary(img), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in found:
        if cv2.contourArea(contour) >= params["min_area"]:
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append([int(x), int(y), int(w), int(h)])
    boxes.sort()
    return img, {"count": len(boxes), "boxes": boxes}


OPERATIONS = (
    Operation(
        "threshold",
        threshold,
        "binary / Otsu / adaptive threshold on gray",
        (
            Param("t", float, 127.0, "threshold (method=binary)", min=0.0, max=255.0),
            Param("method", str, "binary", "how", choices=("binary", "otsu", "adaptive")),
            Param("block", int, 11, "neighbourhood size (adaptive; odd)", min=3, max=255),
            Param("c", float, 2.0, "constant subtracted from the mean (adaptive)"),
        ),
        check=_check_threshold,
        footprint=lambda p: {"binary": 0, "otsu": None, "adaptive": p["block"] // 2}[p["method"]],
    ),
    Operation(
        "morph",
        morph,
        "morphology with a square kernel",
        (
            Param("op", str, "open", "operation", choices=tuple(_MORPH)),
            Param("k", int, 3, "kernel side", min=1, max=255),
        ),
        footprint=lambda p: (2 if p["op"] in ("open", "close") else 1) * (p["k"] // 2),
    ),
    Operation(
        "kmeans",
        kmeans,
        "k-means colour quantisation (deterministic)",
        (Param("k", int, 4, "number of colours", min=1, max=64),),
        footprint=whole_image,
    ),
    Operation(
        "contours",
        contours,
        "count and boxes of objects in a binary image (Otsu first if not binary)",
        (Param("min_area", float, 100.0, "ignore smaller contours (pixels)", min=0.0),),
        kind="analysis",
        tiles="boxes",
    ),
)
