"""Colour operations: ``identity`` and ``gray``.

``gray`` is ITU-R BT.601 luma, Y = 0.299 R + 0.587 G + 0.114 B, on OpenCV's
BGR channel order with no offset; it is exactly ``cv2.cvtColor(img,
cv2.COLOR_BGR2GRAY)`` (OpenCV's fixed-point form of the same weights).
Input policy:

* a 1-channel image passes through unchanged (it is already luma);
* a 4-channel image has its alpha dropped (not composited) before conversion;
* a 16-bit image is scaled to 8 bits first by ``v >> 8`` (the top byte), the
  same rule ``cv2.imread`` applies when it reads a 16-bit file as 8-bit;
* a float image in [0, 1] is scaled by 255 and rounded.
"""

from __future__ import annotations

import numpy as np

from imgstream._cv import cv2
from imgstream.ops.decorator import op
from imgstream.ops.registry import Image


def to_uint8(img: Image) -> Image:
    """8-bit view of an image under the policy above."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if img.dtype.kind == "f":
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {img.dtype}")


@op(
    "gray",
    equals=(
        "BT.601 luma, Y = 0.299 R + 0.587 G + 0.114 B, no offset: ``cv2.cvtColor(img, "
        "cv2.COLOR_BGR2GRAY)``; 1-channel passes through, alpha dropped, 16-bit ``>> 8``"
    ),
    help="BT.601 luma (cv2.COLOR_BGR2GRAY); gray passes through, alpha dropped, 16-bit >> 8",
    details=__doc__ or "",
    footprint=0,
)
def gray(img: Image) -> Image:
    """BT.601 luma of a BGR(A) image; 1-channel images pass through."""
    img = to_uint8(img)
    if img.ndim == 2:
        return img
    channels = img.shape[2]
    if channels == 1:
        return img[:, :, 0]
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"cannot convert a {channels}-channel image to gray")


def as_gray(img: Image) -> Image:
    """A 2-D 8-bit luma image under the policy above (for operations defined on gray)."""
    return gray(img)


def channels(img: Image) -> int:
    """Number of channels (1 for a 2-D image)."""
    return 1 if img.ndim == 2 else int(img.shape[2])


@op("identity", equals="the image, unchanged", help="pass the image through unchanged", footprint=0)
def identity(img: Image) -> Image:
    """The image, unchanged."""
    return img
