"""Edges and gradients: Canny, Sobel, Laplacian, all on the BT.601 gray image.

Sobel and Laplacian are computed in 16-bit signed and returned as
``cv2.convertScaleAbs`` (absolute value, saturated to 8 bits).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from imgstream._cv import cv2
from imgstream.errors import SpecError
from imgstream.ops.builtin.color import as_gray
from imgstream.ops.decorator import Arg, op
from imgstream.ops.registry import Image, whole_image

Kernel = Annotated[Literal[1, 3, 5, 7], Arg("kernel size")]


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


@op(
    "canny",
    equals="``cv2.Canny(gray, lo, hi)``",
    help="Canny edges on gray",
    check=_check_canny,
    footprint=whole_image,  # hysteresis follows edges across the image
)
def canny(
    img: Image,
    *,
    lo: Annotated[float, Arg("low hysteresis threshold", min=0.0)] = 100.0,
    hi: Annotated[float, Arg("high hysteresis threshold", min=0.0)] = 200.0,
) -> Image:
    """``cv2.Canny(gray, lo, hi)``."""
    return cv2.Canny(as_gray(img), lo, hi)


@op(
    "sobel",
    equals="``cv2.convertScaleAbs(cv2.Sobel(gray, cv2.CV_16S, dx, dy, ksize=k))``",
    help="Sobel derivative on gray (absolute, 8-bit)",
    check=_check_sobel,
    footprint=lambda p: max(1, p["k"] // 2),
)
def sobel(
    img: Image,
    *,
    dx: Annotated[int, Arg("x derivative order", min=0, max=2)] = 1,
    dy: Annotated[int, Arg("y derivative order", min=0, max=2)] = 0,
    k: Kernel = 3,
) -> Image:
    """``convertScaleAbs(cv2.Sobel(gray, CV_16S, dx, dy, ksize=k))``."""
    return cv2.convertScaleAbs(cv2.Sobel(as_gray(img), cv2.CV_16S, dx, dy, ksize=k))


@op(
    "laplacian",
    equals="``cv2.convertScaleAbs(cv2.Laplacian(gray, cv2.CV_16S, ksize=k))``",
    help="Laplacian on gray (absolute, 8-bit)",
    footprint=lambda p: max(1, p["k"] // 2),
)
def laplacian(img: Image, *, k: Kernel = 3) -> Image:
    """``convertScaleAbs(cv2.Laplacian(gray, CV_16S, ksize=k))``."""
    return cv2.convertScaleAbs(cv2.Laplacian(as_gray(img), cv2.CV_16S, ksize=k))
