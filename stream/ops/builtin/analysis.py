"""Analysis: statistics, histograms and a perceptual hash. The image passes on unchanged.

``phash`` is the DCT hash: gray, resized to 32x32 with ``INTER_AREA``, 2-D DCT,
the top-left 8x8 coefficients compared with their median; 64 bits as 16 hex
digits. Near-duplicates (re-encoded, resized) are a few bits apart.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np

from imgstream._cv import cv2
from imgstream.ops.builtin.color import as_gray, channels, to_uint8
from imgstream.ops.decorator import Arg, op
from imgstream.ops.registry import Image


@op(
    "stats",
    equals=(
        "per channel ``cv2.meanStdDev`` and ``cv2.minMaxLoc``; brightness and contrast are "
        "the mean and std of the gray image, sharpness the variance of ``cv2.Laplacian(gray, "
        "cv2.CV_64F)``"
    ),
    kind="analysis",
    help="per-channel mean/std/min/max, brightness, contrast, sharpness",
    footprint=0,
    tiles="core",
)
def stats(img: Image) -> dict[str, Any]:
    """Per-channel mean/std/min/max; brightness, contrast and sharpness of the gray image."""
    u8 = to_uint8(img)
    planes = [u8] if channels(u8) == 1 else cv2.split(u8)
    per_channel = []
    for plane in planes:
        mean, std = cv2.meanStdDev(plane)
        lo, hi, _, _ = cv2.minMaxLoc(plane.reshape(plane.shape[0], -1))
        per_channel.append(
            {"mean": float(mean[0, 0]), "std": float(std[0, 0]), "min": int(lo), "max": int(hi)}
        )
    gray = as_gray(u8)
    g_mean, g_std = cv2.meanStdDev(gray)
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    return {
        "channels": per_channel,
        "brightness": float(g_mean[0, 0]),
        "contrast": float(g_std[0, 0]),
        "sharpness": sharpness,
    }


@op(
    "hist",
    equals="per channel ``cv2.calcHist([plane], [0], None, [bins], [0, 256])``",
    kind="analysis",
    help="per-channel histogram",
    footprint=0,
    tiles="core",
)
def hist(
    img: Image, *, bins: Annotated[int, Arg("number of bins", min=1, max=256)] = 32
) -> dict[str, Any]:
    """``cv2.calcHist`` per channel with ``bins`` bins over 0..256."""
    u8 = to_uint8(img)
    n = channels(u8)
    out = [
        cv2.calcHist([u8], [c], None, [bins], [0, 256]).ravel().astype(np.int64).tolist()
        for c in range(n)
    ]
    return {"bins": bins, "channels": out}


def phash_bits(img: Image) -> int:
    """The 64-bit DCT perceptual hash as an integer."""
    small = cv2.resize(as_gray(img), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


@op(
    "phash",
    equals=(
        "``cv2.dct`` of the gray image resized to 32x32 (``cv2.INTER_AREA``): its 8x8 lowest "
        "frequencies against their median, 64 bits as hex"
    ),
    kind="analysis",
    help="64-bit DCT perceptual hash (hex)",
)
def phash(img: Image) -> dict[str, Any]:
    """64-bit perceptual hash as 16 hex digits."""
    return {"hash": f"{phash_bits(img):016x}"}


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
