"""Enhancement: histogram equalisation, CLAHE, gamma, min-max normalisation, sharpening.

Colour policy: ``equalize`` works on the luma of YCrCb and ``clahe`` on the L
of Lab, so hues are kept; on 1-channel images both work on the image itself.
``gamma``, ``normalize`` and ``sharpen`` work on every channel.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from imgstream._cv import cv2
from imgstream.ops.builtin.color import channels, to_uint8
from imgstream.ops.decorator import Arg, op
from imgstream.ops.registry import Image, whole_image


def _bgr(img: Image) -> Image:
    """3-channel BGR view: alpha dropped (as decoding does)."""
    return img[:, :, :3] if channels(img) == 4 else img


def _one_channel(img: Image) -> Image | None:
    if img.ndim == 2:
        return img
    if img.shape[2] == 1:
        return img[:, :, 0]
    return None


@op(
    "equalize",
    equals="``cv2.equalizeHist`` on gray; on colour, on the Y of YCrCb",
    help="histogram equalisation (gray, or Y of YCrCb)",
    footprint=whole_image,
)
def equalize(img: Image) -> Image:
    """``cv2.equalizeHist`` on gray; on colour, on the Y of YCrCb."""
    img = to_uint8(img)
    single = _one_channel(img)
    if single is not None:
        return cv2.equalizeHist(single)
    ycc = cv2.cvtColor(_bgr(img), cv2.COLOR_BGR2YCrCb)
    ycc[:, :, 0] = cv2.equalizeHist(ycc[:, :, 0])
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)


@op(
    "clahe",
    equals=(
        "``cv2.createCLAHE(clipLimit=clip, tileGridSize=(tile, tile)).apply`` on gray, or on "
        "the L of Lab"
    ),
    help="contrast-limited adaptive equalisation (gray, or L of Lab)",
    footprint=whole_image,
)
def clahe(
    img: Image,
    *,
    clip: Annotated[float, Arg("clip limit", min=0.0)] = 2.0,
    tile: Annotated[int, Arg("tile grid size (tile x tile)", min=1, max=256)] = 8,
) -> Image:
    """``cv2.createCLAHE(clipLimit=clip, tileGridSize=(tile, tile))`` on gray or L of Lab."""
    img = to_uint8(img)
    tool = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tile, tile))
    single = _one_channel(img)
    if single is not None:
        return tool.apply(single)
    lab = cv2.cvtColor(_bgr(img), cv2.COLOR_BGR2Lab)
    lab[:, :, 0] = tool.apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_Lab2BGR)


def gamma_lut(g: float) -> Image:
    """The 256-entry table of out = 255 * (in / 255) ** (1 / g), rounded."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    return np.clip(np.rint(255.0 * levels ** (1.0 / g)), 0, 255).astype(np.uint8)


@op(
    "gamma",
    equals="a lookup table of 255 (v/255)^(1/g), ``cv2.LUT`` (g > 1 brightens)",
    help="gamma correction, out = 255*(in/255)^(1/g)",
    footprint=0,
)
def gamma(
    img: Image, *, g: Annotated[float, Arg("gamma; > 1 brightens", min=0.01, max=100.0)] = 1.0
) -> Image:
    """Gamma correction, out = 255 (in/255)^(1/g): g > 1 brightens (ImageMagick's sense)."""
    return cv2.LUT(to_uint8(img), gamma_lut(g))


@op(
    "normalize",
    equals="``cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)``",
    help="stretch the value range to 0..255 (min-max)",
    footprint=whole_image,
)
def normalize(img: Image) -> Image:
    """``cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)``: the image's range to 0..255."""
    return cv2.normalize(to_uint8(img), None, 0, 255, cv2.NORM_MINMAX, dtype=cv2.CV_8U)  # type: ignore[call-overload, no-any-return]


@op(
    "sharpen",
    equals=(
        "unsharp mask: ``cv2.addWeighted(img, 1 + amount, cv2.GaussianBlur(img, (0, 0), "
        "sigma), -amount, 0)``"
    ),
    help="unsharp mask",
    footprint=lambda p: (int(p["sigma"] * 6 + 1.5) | 1) // 2,  # OpenCV's ksize for 8-bit
)
def sharpen(
    img: Image,
    *,
    amount: Annotated[float, Arg("strength", min=0.0, max=20.0)] = 1.0,
    sigma: Annotated[float, Arg("Gaussian sigma of the mask", min=0.1, max=100.0)] = 1.0,
) -> Image:
    """Unsharp mask: (1 + amount) img - amount GaussianBlur(img, sigma), saturated."""
    img = to_uint8(img)
    blurred = cv2.GaussianBlur(img, (0, 0), sigma)
    return cv2.addWeighted(img, 1.0 + amount, blurred, -amount, 0)
