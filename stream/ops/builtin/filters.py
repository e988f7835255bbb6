"""Filtering and denoising: Gaussian, median, bilateral, non-local means.

Each works on every channel, exactly as the OpenCV call named (default
borders: ``BORDER_REFLECT_101``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from imgstream._cv import cv2
from imgstream.errors import SpecError
from imgstream.ops.builtin.color import channels, to_uint8
from imgstream.ops.decorator import Arg, op
from imgstream.ops.registry import Image, radius


def _odd(name: str, key: str = "k", minimum: int = 1) -> Any:
    def check(params: Mapping[str, Any]) -> None:
        k = params[key]
        if k % 2 == 0 or k < minimum:
            raise SpecError(
                f"operation {name!r}: parameter {key!r} must be an odd number >= {minimum}, got {k}"
            )

    return check


@op(
    "blur",
    equals="``cv2.GaussianBlur(img, (k, k), 0)``",
    help="Gaussian blur",
    check=_odd("blur"),
    footprint=radius("k"),
)
def blur(img: Image, *, k: Annotated[int, Arg("kernel size (odd)", min=1, max=255)] = 5) -> Image:
    """``cv2.GaussianBlur(img, (k, k), 0)`` (sigma from k)."""
    return cv2.GaussianBlur(img, (k, k), 0)


@op(
    "median",
    equals="``cv2.medianBlur(img, k)``",
    help="median filter",
    check=_odd("median", minimum=3),
    footprint=radius("k"),
)
def median(
    img: Image, *, k: Annotated[int, Arg("aperture (odd, >= 3)", min=3, max=255)] = 5
) -> Image:
    """``cv2.medianBlur(img, k)``."""
    return cv2.medianBlur(to_uint8(img), k)


@op(
    "bilateral",
    equals="``cv2.bilateralFilter(img, d, sigma_color, sigma_space)``",
    help="edge-preserving bilateral filter",
    footprint=radius("d"),
)
def bilateral(
    img: Image,
    *,
    d: Annotated[int, Arg("pixel neighbourhood diameter", min=1, max=64)] = 9,
    sigma_color: Annotated[float, Arg("filter sigma in colour space", min=0.0)] = 75.0,
    sigma_space: Annotated[float, Arg("filter sigma in coordinate space", min=0.0)] = 75.0,
) -> Image:
    """``cv2.bilateralFilter(img, d, sigma_color, sigma_space)``."""
    img = to_uint8(img)
    if channels(img) == 4:
        img = img[:, :, :3]
    return cv2.bilateralFilter(img, d, sigma_color, sigma_space)


@op(
    "denoise",
    equals=(
        "``cv2.fastNlMeansDenoisingColored(img, None, h, h, 7, 21)`` (gray: "
        "``cv2.fastNlMeansDenoising(img, None, h, 7, 21)``)"
    ),
    help="non-local means denoising",
    footprint=3 + 10,  # 7x7 template in a 21x21 search window
)
def denoise(
    img: Image, *, h: Annotated[float, Arg("filter strength", min=0.0, max=100.0)] = 10.0
) -> Image:
    """Non-local means: ``fastNlMeansDenoisingColored(img, None, h, h, 7, 21)`` on colour,
    ``fastNlMeansDenoising(img, None, h, 7, 21)`` on gray."""
    img = to_uint8(img)
    if channels(img) == 1:
        return cv2.fastNlMeansDenoising(img, None, h, 7, 21)
    return cv2.fastNlMeansDenoisingColored(img[:, :, :3], None, h, h, 7, 21)
