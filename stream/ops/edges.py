"""Edges and gradients: Canny, Sobel, Laplacian, all on the BT.601 gray image.

Sobel and Laplacian are computed in 16-bit signed and returned as
``cv2.convertScaleAbs`` (absolute value, saturated to 8 bits).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imgstream._cv import cv2
from imgstream.errors import SpecError
from imgstream.ops.color import as_gray
from imgstream.ops.registry import Image, Operation, Param, whole_image


def canny(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """``cv2.Canny(gray, lo, hi)``."""
    return cv2.Canny(as_gray(img), params["lo"], params["hi"]), None


def sobel(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """``convertScaleAbs(cv2.Sobel(gray, CV_16S, dx, dy, ksize=k))``."""
    grad = cv2.Sobel(as_gray(img), cv2.CV_16S, params["dx"], params["dy"], ksize=params["k"])
    return cv2.convertScaleAbs(grad), None


def laplacian(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """``convertScaleAbs(cv2.Laplacian(gray, CV_16S, ksize=k))``."""
    return cv2.convertScaleAbs(cv2.Laplacian(as_gray(img), cv2.CV_16S, ksize=params["k"])), None


def _check_canny(params: Mapping[str, Any]) -> None:
    if params["lo"] > params["hi"]:
        raise SpecError(
            f"operation 'canny': lo ({params['lo']}) must not exceed hi ({params['hi']})"
        )


def _check_sobel(params: Mapping[str, Any]) -> None:
    if params["dx"] + params["dy"] == 0:
        raise SpecError("operation 'sobel': dx and dy cannot both be 0")
    if max(params["dx"], params["dy"]) >= params["k"]:
        raise SpecError("operation 'sobel': derivative order must be below the kernel size k")


OPERATIONS = (
    Operation(
        "canny",
        canny,
        "Canny edges on gray",
        (
            Param("lo", float, 100.0, "low hysteresis threshold", min=0.0),
            Param("hi", float, 200.0, "high hysteresis threshold", min=0.0),
        ),
        check=_check_canny,
        footprint=whole_image,  # hysteresis follows edges across the image
    ),
    Operation(
        "sobel",
        sobel,
        "Sobel derivative on gray (absolute, 8-bit)",
        (
            Param("dx", int, 1, "x derivative order", min=0, max=2),
            Param("dy", int, 0, "y derivative order", min=0, max=2),
            Param("k", int, 3, "kernel size", choices=(1, 3, 5, 7)),
        ),
        check=_check_sobel,
        footprint=lambda p: max(1, p["k"] // 2),
    ),
    Operation(
        "laplacian",
        laplacian,
        "Laplacian on gray (absolute, 8-bit)",
        (Param("k", int, 3, "kernel size", choices=(1, 3, 5, 7)),),
        footprint=lambda p: max(1, p["k"] // 2),
    ),
)
