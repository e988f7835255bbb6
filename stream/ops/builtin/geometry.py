"""Geometry: resize, crop, rotate, flip.

``resize`` keeps the aspect ratio when one side is given (the other is
rounded half up), uses ``INTER_AREA`` when the image shrinks and
``INTER_LINEAR`` when it grows. ``max`` shrinks so the longest side is at
most ``max`` and never enlarges. ``rotate`` turns clockwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from imgstream._cv import cv2
from imgstream.errors import OP_ERROR, ImageError, SpecError
from imgstream.ops.decorator import Arg, op
from imgstream.ops.registry import Image, whole_image


def _round(x: float) -> int:
    return max(1, int(x + 0.5))


def target_size(width: int, height: int, params: Mapping[str, Any]) -> tuple[int, int]:
    """(new width, new height) for the resize parameters."""
    w, h, scale, longest = params["w"], params["h"], params["scale"], params["max"]
    if w is not None and h is not None:
        return w, h
    if w is not None:
        return w, _round(height * w / width)
    if h is not None:
        return _round(width * h / height), h
    if scale is not None:
        return _round(width * scale), _round(height * scale)
    factor = min(1.0, longest / max(width, height))
    return _round(width * factor), _round(height * factor)


def _check_resize(params: Mapping[str, Any]) -> None:
    given = [k for k in ("w", "h", "scale", "max") if params[k] is not None]
    if not given:
        raise SpecError("operation 'resize': give w, h, w and h, scale, or max")
    if ("scale" in given or "max" in given) and len(given) > 1:
        raise SpecError(
            f"operation 'resize': scale and max cannot be combined with other sizes ({given})"
        )


@op(
    "resize",
    equals=(
        "``cv2.resize``, aspect kept when one side is given (rounded half up); "
        "``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_LINEAR`` when enlarging; ``max`` "
        "never enlarges"
    ),
    help="resize; aspect kept when one side is given",
    check=_check_resize,
    footprint=whole_image,
)
def resize(
    img: Image,
    *,
    w: Annotated[int | None, Arg("width in pixels", min=1, max=100_000)] = None,
    h: Annotated[int | None, Arg("height in pixels", min=1, max=100_000)] = None,
    scale: Annotated[float | None, Arg("factor for both sides", min=0.001, max=100.0)] = None,
    max: Annotated[int | None, Arg("longest side at most this (never enlarges)", min=1)] = None,
) -> Image:
    """``cv2.resize`` to the target size; AREA when shrinking, LINEAR when enlarging."""
    height, width = img.shape[:2]
    new_w, new_h = target_size(width, height, {"w": w, "h": h, "scale": scale, "max": max})
    if (new_w, new_h) == (width, height):
        return img
    shrinking = new_w * new_h < width * height
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(img, (new_w, new_h), interpolation=interp)


@op(
    "crop",
    equals="``img[y:y + h, x:x + w]``, the box clipped to the image",
    help="crop a box (clipped to the image)",
    footprint=whole_image,
)
def crop(
    img: Image,
    *,
    x: Annotated[int, Arg("left", min=0)] = 0,
    y: Annotated[int, Arg("top", min=0)] = 0,
    w: Annotated[int | None, Arg("width (default: to the right edge)", min=1)] = None,
    h: Annotated[int | None, Arg("height (default: to the bottom edge)", min=1)] = None,
) -> Image:
    """The box (x, y, w, h), clipped to the image; w/h unset means to the edge."""
    height, width = img.shape[:2]
    w = w if w is not None else width - x
    h = h if h is not None else height - y
    x1, y1 = min(width, x + w), min(height, y + h)
    if x >= width or y >= height or x1 <= x or y1 <= y:
        raise ImageError(
            OP_ERROR, f"crop box ({x}, {y}, {w}, {h}) is outside a {width}x{height} image"
        )
    return img[y:y1, x:x1].copy()


_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


@op(
    "rotate",
    equals="``cv2.rotate``, clockwise",
    help="rotate clockwise by a right angle",
    footprint=whole_image,
)
def rotate(
    img: Image, *, deg: Annotated[Literal[90, 180, 270], Arg("degrees clockwise")] = 90
) -> Image:
    """``cv2.rotate`` by 90, 180 or 270 degrees clockwise."""
    return cv2.rotate(img, _ROTATIONS[deg])


@op(
    "flip",
    equals="``cv2.flip`` (h: left-right, v: top-bottom)",
    help="mirror the image",
    footprint=whole_image,
)
def flip(
    img: Image, *, axis: Annotated[Literal["h", "v"], Arg("h: left-right, v: top-bottom")] = "h"
) -> Image:
    """``cv2.flip``: axis h mirrors left-right (flipCode 1), v upside-down (0)."""
    return cv2.flip(img, 1 if axis == "h" else 0)
