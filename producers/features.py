"""Features the feature-based partitioners need, read by the producer.

``size``: width and height from the image header (no pixel is decoded).
``phash``: the perceptual hash of a reduced decode (JPEG and PNG decode at
1/8 scale, so this stays cheap). Both go into the ref's ``meta``; a file
that cannot be read keeps its ref unchanged (the worker reports it).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from imgstream._cv import cv2
from imgstream.errors import ImageError
from imgstream.io import imaging
from imgstream.ops.builtin.analysis import phash_bits
from imgstream.schema.records import ImageRef


def with_size(ref: ImageRef) -> ImageRef:
    """The ref with ``meta.width``/``meta.height`` from its file's header."""
    try:
        with open(ref.uri, "rb") as fh:
            head = fh.read(1 << 18)
        size = imaging.header_size(head, imaging.sniff(head))
    except (OSError, ImageError):
        return ref
    if size is None:
        return ref
    return replace(ref, meta={**(ref.meta or {}), "width": size[0], "height": size[1]})


def with_phash(ref: ImageRef) -> ImageRef:
    """The ref with ``meta.phash`` of its image."""
    try:
        with open(ref.uri, "rb") as fh:
            data = fh.read()
    except OSError:
        return ref
    small = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if small is None:
        return ref
    return replace(ref, meta={**(ref.meta or {}), "phash": f"{phash_bits(small):016x}"})


ENRICH = {"size": with_size, "phash": with_phash}
