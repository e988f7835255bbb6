"""Filtering and denoising: Gaussian, median, bilateral, non-local means.

Each works on every channel, exactly as the OpenCV call named (default
borders: ``BORDER_REFLECT_101``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imgstream._cv import cv2
from imgstream.errors import SpecError
from imgstream.ops.color import channels, to_uint8
from imgstream.ops.registry import Image, Operation, Param, radius


def _odd(name: str, key: str = "k", minimum: int = 1) -> Any:
    def check(params: Mapping[str, Any]) -> None:
        k = params[key]
        if k % 2 == 0 or k < minimum:
            raise SpecError(
                f"operation {name!r}: parameter {key!r} must be an odd number >= {minimum}, got {k}"
            )

    return check


def blur(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """``cv2.GaussianBlur(img, (k, k), 0)`` (sigma from k)."""
    k = params["k"]
    return cv2.GaussianBlur(img, (k, k), 0), None


def median(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """``cv2.medianBlur(img, k)``."""
    return cv2.medianBlur(to_uint8(img), params["k"]), None


def bilateral(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """``cv2.bilateralFilter(img, d, sigma_color, sigma_space)``."""
    img = to_uint8(img)
    if channels(img) == 4:
        img = img[:, :, :3]
    out = cv2.bilateralFilter(img, params["d"], params["sigma_color"], params["sigma_space"])
    return out, None


def denoise(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """Non-local means: ``fastNlMeansDenoisingColored(img, None, h, h, 7, 21)`` on colour,
    ``fastNlMeansDenoising(img, None, h, 7, 21)`` on gray."""
    img = to_uint8(img)
    h = params["h"]
    if channels(img) == 1:
        return cv2.fastNlMeansDenoising(img, None, h, 7, 21), None
    return cv2.fastNlMeansDenoisingColored(img[:, :, :3], None, h, h, 7, 21), None


OPERATIONS = (
    Operation(
        "blur",
        blur,
        "Gaussian blur",
        (Param("k", int, 5, "kernel size (odd)", min=1, max=255),),
        check=_odd("blur"),
        footprint=radius("k"),
    ),
    Operation(
        "median",
        median,
        "median filter",
        (Param("k", int, 5, "aperture (odd, >= 3)", min=3, max=255),),
        check=_odd("median", minimum=3),
        footprint=radius("k"),
    ),
    Operation(
        "bilateral",
        bilateral,
        "edge-preserving bilateral filter",
        (
            Param("d", int, 9, "pixel neighbourhood diameter", min=1, max=64),
            Param("sigma_color", float, 75.0, "filter sigma in colour space", min=0.0),
            Param("sigma_space", float, 75.0, "filter sigma in coordinate space", min=0.0),
        ),
        footprint=radius("d"),
    ),
    Operation(
        "denoise",
        denoise,
        "non-local means denoising",
        (Param("h", float, 10.0, "filter strength", min=0.0, max=100.0),),
        footprint=lambda p: 3 + 10,  # 7x7 template in a 21x21 search window
    ),
)
