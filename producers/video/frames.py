"""Storing one source's frames as JPEG files and emitting a ref for each stored one.

A frame is shrunk to ``max_width`` (if wider), encoded, stored under
``{store}/{source}/`` (a folder, written atomically, or an ``s3://`` prefix,
uploaded through the object store) and only then emitted, so a ref never names a
frame that is not stored. Ids are ``{source}-{ts}-{index}``: the index counts
the frames this writer was given, so no id is produced twice, across
reconnects too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from imgstream._cv import cv2
from imgstream.io.storage import safe_name
from imgstream.io.stores import Outputs, OutputSink, absolute, join
from imgstream.schema.records import ImageRef

log = logging.getLogger("imgstream.capture")


def shrink(image: Any, max_width: int | None) -> Any:
    """``image`` scaled down to ``max_width`` pixels wide (aspect kept), or as it is."""
    if max_width is None or image.shape[1] <= max_width:
        return image
    height = max(1, round(image.shape[0] * max_width / image.shape[1]))
    return cv2.resize(image, (max_width, height), interpolation=cv2.INTER_AREA)


class FrameWriter:
    """Encodes, stores and emits the frames of one source (used by one thread).

    ``store_dir`` is a folder or an ``s3://`` prefix; ``outputs`` writes there
    (shared by every camera's writer).
    """

    def __init__(
        self,
        source: str,
        store_dir: str,
        emit: Callable[[ImageRef], None],
        quality: int = 90,
        max_width: int | None = None,
        outputs: OutputSink | None = None,
    ) -> None:
        self.source = source
        self.folder = join(store_dir, safe_name(source))
        self.outputs: OutputSink = outputs if outputs is not None else Outputs()
        self.emit = emit
        self.quality = quality
        self.max_width = max_width

    def write(
        self, image: Any, ts: int, index: int, meta: Mapping[str, Any] | None = None
    ) -> ImageRef | None:
        """Store and emit one frame; its ref, or None when it could not be encoded or stored."""
        ok, buf = cv2.imencode(
            ".jpg", shrink(image, self.max_width), [cv2.IMWRITE_JPEG_QUALITY, self.quality]
        )
        if not ok:
            log.warning("%s: frame %d could not be encoded", self.source, index)
            return None
        name = f"{ts}-{index:08d}"
        path = absolute(join(self.folder, name + ".jpg"))
        try:
            self.outputs.write(path, bytes(buf))
        except OSError as exc:  # a full disk, an object store refusing: count, go on
            log.error("%s: frame %d not stored (%s)", self.source, index, exc.strerror or exc)
            return None
        ref = ImageRef(
            id=f"{safe_name(self.source)}-{name}",
            uri=path,
            ts=ts,
            source=self.source,
            meta=dict(meta or {}, frame=index),
        )
        try:
            self.emit(ref)
        except Exception as exc:  # the producer refused it (full buffer, closed): count, go on
            log.error("%s: ref of frame %d not sent (%s)", self.source, index, exc)
            return None
        return ref
