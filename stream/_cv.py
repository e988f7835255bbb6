"""The one place that imports OpenCV.

OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, when its codecs first run,
and refuses larger images before allocating them. It must be in the
environment before ``cv2`` is imported (the name is not
``CV_IO_MAX_IMAGE_PIXELS``), so every module takes ``cv2`` from here. This is
a backstop, set once for every process at the ceiling of the largest source
imgstream tiles (:data:`imgstream.config.MAX_SOURCE_PIXELS`): the configured
``--max-pixels`` is checked from each image's header before decoding, and a
file whose size cannot be read from its header is never decoded. Nothing else
touches the environment.
"""

from __future__ import annotations

import os

#: The ceiling on decoded pixels: equal to config.MAX_SOURCE_PIXELS (a unit test
#: checks), not imported from there so that config does not import cv2.
HARD_MAX_PIXELS = 2_000_000_000

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(HARD_MAX_PIXELS))

import cv2  # noqa: E402

__all__ = ["HARD_MAX_PIXELS", "cv2"]
