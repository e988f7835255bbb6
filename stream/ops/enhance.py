"""Enhancement: histogram equalisation, CLAHE, gamma, min-max normalisation, sharpening.

Colour policy: ``equalize`` works on the luma of YCrCb and ``clahe`` on the L
of Lab, so hues are kept; on 1-channel images both work on the image itself.
``gamma``, ``normalize`` and ``sharpen`` work on every channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from imgstream._cv import cv2
from imgstream.ops.color import channels, to_uint8
from imgstream.ops.registry import Image, Operation, Param, whole_image


def _bgr(img: Image) -> Image:
    """3-channel BGR view: alpha dropped (as decoding does)."""
    return img[:, :, :3] if channels(img) == 4 else img


def _one_channel(img: Image) -> Image | None:
    if img.ndim == 2:
        return img
    if img.shape[2] == 1:
        return img[:, :, 0]
    return None


def equalize(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """``cv2.equalizeHist`` on gray; on colour, on the Y of YCrCb."""
    img = to_uint8(img)
    single = _one_channel(img)
    if single is not None:
        return cv2.equalizeHist(single), None
    ycc = cv2.cvtColor(_bgr(img), cv2.COLOR_BGR2YCrCb)
    ycc[:, :, 0] = cv2.equalizeHist(ycc[:, :, 0])
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR), None


def clahe(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """``cv2.createCLAHE(clipLimit=clip, tileGridSize=(tile, tile))`` on gray or L of Lab."""
    img = to_uint8(img)
    tool = cv2.createCLAHE(clipLimit=params["clip"], tileGridSize=(params["tile"], params["tile"]))
    single = _one_channel(img)
    if single is not None:
        return tool.apply(single), None
    lab = cv2.cvtColor(_bgr(img), cv2.COLOR_BGR2Lab)
    lab[:, :, 0] = tool.apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_Lab2BGR), None


def gamma_lut(g: float) -> Image:
    """The 256-entry table of out = 255 * (in / 255) ** (1 / g), rounded."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    return np.clip(np.rint(255.0 * levels ** (1.0 / g)), 0, 255).astype(np.uint8)


def gamma(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """Gamma correction, out = 255 (in/255)^(1/g): g > 1 brightens (ImageMagick's sense)."""
    return cv2.LUT(to_uint8(img), gamma_lut(params["g"])), None


def normalize(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """``cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)``: the image's range to 0..255."""
    out = cv2.normalize(to_uint8(img), None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)  # type: ignore[call-overload]
    return out, None


def sharpen(img: Image, params: Mapping[str, Any]) -> tuple[Image, None]:
    """Unsharp mask: (1 + amount) img - amount GaussianBlur(img, sigma), saturated."""
    img = to_uint8(img)
    blurred = cv2.GaussianBlur(img, (0, 0), params["sigma"])
    amount = params["amount"]
    return cv2.addWeighted(img, 1.0 + amount, blurred, -amount, 0), None


OPERATIONS = (
    Operation(
        "equalize",
        equalize,
        "histogram equalisation (gray, or Y of YCrCb)",
        footprint=whole_image,
    ),
    Operation(
        "clahe",
        clahe,
        "contrast-limited adaptive equalisation (gray, or L of Lab)",
        (
            Param("clip", float, 2.0, "clip limit", min=0.0),
            Param("tile", int, 8, "tile grid size (tile x tile)", min=1, max=256),
        ),
        footprint=whole_image,
    ),
    Operation(
        "gamma",
        gamma,
        "gamma correction, out = 255*(in/255)^(1/g)",
        (Param("g", float, 1.0, "gamma; > 1 brightens", min=0.01, max=100.0),),
    ),
    Operation(
        "normalize",
        normalize,
        "stretch the value range to 0..255 (min-max)",
        footprint=whole_image,
    ),
    Operation(
        "sharpen",
        sharpen,
        "unsharp mask",
        (
            Param("amount", float, 1.0, "strength", min=0.0, max=20.0),
            Param("sigma", float, 1.0, "Gaussian sigma of the mask", min=0.1, max=100.0),
        ),
        footprint=lambda p: (int(p["sigma"] * 6 + 1.5) | 1) // 2,  # OpenCV's ksize for 8-bit
    ),
)
