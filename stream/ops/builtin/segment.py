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
from typing import Annotated, Any, Literal

import numpy as np

from imgstream._cv import cv2
from imgstream.errors import SpecError
from imgstream.ops.builtin.color import as_gray, channels, to_uint8
from imgstream.ops.decorator import Arg, op
from imgstream.ops.registry import Image, whole_image


def _check_threshold(params: Mapping[str, Any]) -> None:
    if params["block"] % 2 == 0 or params["block"] < 3:
        raise SpecError(
            f"operation 'threshold': parameter 'block' must be odd and >= 3, got {params['block']}"
        )


@op(
    "threshold",
    equals=(
        "``cv2.threshold(gray, t, 255, cv2.THRESH_BINARY)``; ``method=otsu`` adds "
        "``cv2.THRESH_OTSU``; ``method=adaptive`` is ``cv2.adaptiveThreshold(gray, 255, "
        "cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, c)``"
    ),
    help="binary / Otsu / adaptive threshold on gray",
    check=_check_threshold,
    footprint=lambda p: {"binary": 0, "otsu": None, "adaptive": p["block"] // 2}[p["method"]],
)
def threshold(
    img: Image,
    *,
    t: Annotated[float, Arg("threshold (method=binary)", min=0.0, max=255.0)] = 127.0,
    method: Annotated[Literal["binary", "otsu", "adaptive"], Arg("how")] = "binary",
    block: Annotated[int, Arg("neighbourhood size (adaptive; odd)", min=3, max=255)] = 11,
    c: Annotated[float, Arg("constant subtracted from the mean (adaptive)")] = 2.0,
) -> Image:
    """Binary, Otsu or adaptive threshold of the gray image."""
    gray = as_gray(img)
    if method == "adaptive":
        return cv2.adaptiveThreshold(
            gray, 255, cv2.ADAPTIVE_THRESH_GAUSSIAN_C, cv2.THRESH_BINARY, block, c
        )
    if method == "otsu":
        return cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[1]
    return cv2.threshold(gray, t, 255, cv2.THRESH_BINARY)[1]


_MORPH = {
    "open": cv2.MORPH_OPEN,
    "close": cv2.MORPH_CLOSE,
    "erode": cv2.MORPH_ERODE,
    "dilate": cv2.MORPH_DILATE,
}


@op(
    "morph",
    equals="``cv2.morphologyEx(img, op, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))``",
    help="morphology with a square kernel",
    footprint=lambda p: (2 if p["op"] in ("open", "close") else 1) * (p["k"] // 2),
)
def morph(
    img: Image,
    *,
    op: Annotated[Literal["open", "close", "erode", "dilate"], Arg("operation")] = "open",
    k: Annotated[int, Arg("kernel side", min=1, max=255)] = 3,
) -> Image:
    """``cv2.morphologyEx(img, op, getStructuringElement(MORPH_RECT, (k, k)))``."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    return cv2.morphologyEx(img, _MORPH[op], kernel)


KMEANS_SEED = 12345


@op(
    "kmeans",
    equals="colour quantisation with ``cv2.kmeans`` (k-means++, seeded: deterministic)",
    help="k-means colour quantisation (deterministic)",
    footprint=whole_image,
)
def kmeans(
    img: Image, *, k: Annotated[int, Arg("number of colours", min=1, max=64)] = 4
) -> tuple[Image, dict[str, Any]]:
    """Colour quantisation: every pixel replaced by the centre of its k-means cluster."""
    img = to_uint8(img)
    if channels(img) == 4:
        img = img[:, :, :3]
    c = channels(img)
    data = img.reshape(-1, c).astype(np.float32)
    k = min(k, len(data))
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


@op(
    "contours",
    equals=(
        "``cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)``, those with"
        " ``cv2.contourArea`` >= ``min_area``, as ``cv2.boundingRect`` boxes (Otsu first if "
        "the image is not binary)"
    ),
    kind="analysis",
    help="count and boxes of objects in a binary image (Otsu first if not binary)",
    footprint=0,
    tiles="boxes",
)
def contours(
    img: Image,
    *,
    min_area: Annotated[float, Arg("ignore smaller contours (pixels)", min=0.0)] = 100.0,
) -> dict[str, Any]:
    """External contours of a binary image (Otsu-thresholded first if it is not binary)."""
    found, _ = cv2.findContours(_binary(img), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in found:
        if cv2.contourArea(contour) >= min_area:
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append([int(x), int(y), int(w), int(h)])
    boxes.sort()
    return {"count": len(boxes), "boxes": boxes}
