"""The one place that imports OpenCV.

OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, when its codecs first run,
and refuses larger images before allocating them. It must be in the
environment before ``cv2`` is imported (the name is not
``CV_IO_MAX_IMAGE_PIXELS``), so every module takes ``cv2`` from here. This is
a backstop: :mod:`imgstream.imaging` checks the configured limit from the
image header itself first.
"""

from __future__ import annotations

import os

#: The hard ceiling on decoded pixels for formats whose header we do not parse.
HARD_MAX_PIXELS = 1 << 28

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(HARD_MAX_PIXELS))

import cv2  # noqa: E402

__all__ = ["HARD_MAX_PIXELS", "cv2"]
