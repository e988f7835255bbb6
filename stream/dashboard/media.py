"""Images for the page: which files may be shown, and bounded thumbnails of them, cached.

The URL never names a file. It names a record (id + pipeline hash) and a
side (``in`` or ``out``); the path comes from that record, and is read only
through :class:`~imgstream.io.storage.SafeStore` under the allowed roots:
outputs under the store's folder and the ``--root`` folders, inputs under
the ``--root`` folders. So ``..``, absolute paths outside the roots and
symlinks that leave them are refused exactly as a worker refuses them, and a
request can only ever reach a file some record points to. Bytes are never
passed through: every image is decoded (bounded in pixels) and re-encoded as
a JPEG no larger than :data:`MAX_SIDE`, so a file that is not an image is
never served either.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from imgstream._cv import cv2
from imgstream.errors import ImageError
from imgstream.io import imaging
from imgstream.io.storage import SafeStore

#: Thumbnail widths served; a request is rounded up to the next one (so the cache hits).
SIZES = (160, 320, 640, 1280)
MAX_SIDE = SIZES[-1]
#: Images over this many pixels are not decoded for a thumbnail.
MAX_PIXELS = 50_000_000
#: Files over this many bytes are not read for a thumbnail.
MAX_BYTES = 128 << 20


class NotServed(Exception):
    """The image may not or cannot be shown (the server answers 404)."""


@dataclass(frozen=True)
class Roots:
    """Where images may be read from: outputs and inputs (both may be empty)."""

    outputs: tuple[str, ...]
    inputs: tuple[str, ...]

    @classmethod
    def for_store(cls, db_path: str, roots: Sequence[str]) -> Roots:
        """Outputs under the store's folder or a --root; inputs under a --root."""
        extra = tuple(os.path.abspath(r) for r in roots)
        return cls((os.path.dirname(os.path.abspath(db_path)), *extra), extra)


class MediaResolver:
    """Finds the file behind (record, side) inside the allowed roots, or refuses."""

    def __init__(self, roots: Roots) -> None:
        self.roots = roots
        self._stores = {
            "out": SafeStore(roots.outputs, max_bytes=MAX_BYTES) if roots.outputs else None,
            "in": SafeStore(roots.inputs, max_bytes=MAX_BYTES) if roots.inputs else None,
        }

    def _store(self, side: str) -> SafeStore:
        store = self._stores.get(side)
        if store is None:
            raise NotServed(f"no root allows {side!r} images")
        return store

    def resolve(self, side: str, uri: object) -> str:
        """The real path of the image, if it is a regular file inside the roots."""
        if not isinstance(uri, str) or not uri:
            raise NotServed("the record names no file")
        try:
            return self._store(side).resolve(uri)
        except ImageError as exc:
            raise NotServed(exc.message) from None

    def can_serve(self, side: str, uri: object) -> bool:
        """Whether :meth:`resolve` would succeed (the page shows a placeholder otherwise)."""
        try:
            self.resolve(side, uri)
        except NotServed:
            return False
        return True

    def read(self, side: str, uri: str) -> bytes:
        """The file's bytes, read race-free under the roots (bounded)."""
        try:
            return self._store(side).read(uri).data
        except ImageError as exc:
            raise NotServed(exc.message) from None


def thumb_width(requested: int | None) -> int:
    """The served width for a requested one: the next size up, at most MAX_SIDE."""
    if requested is None:
        return SIZES[1]
    return next((s for s in SIZES if s >= requested), MAX_SIDE)


def make_thumbnail(data: bytes, width: int, quality: int = 80) -> bytes:
    """A JPEG at most ``width`` wide (and high) of the image in ``data``; NotServed if none."""
    try:
        img = imaging.decode(data, max_pixels=MAX_PIXELS).image
    except ImageError as exc:
        raise NotServed(exc.message) from None
    h, w = img.shape[:2]
    scale = min(1.0, width / w, width / h)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise NotServed("the thumbnail could not be encoded")
    return bytes(buf)


class ThumbnailCache:
    """Thumbnails made on demand, kept in a least-recently-used cache bounded in bytes.

    Keyed by the file's real path, size and modification time (an overwritten
    output is made again) and the width. Thread-safe: the server's request
    threads share one cache; two requests for the same missing thumbnail may
    both make it (harmless).
    """

    def __init__(self, resolver: MediaResolver, max_bytes: int = 32 << 20) -> None:
        self.resolver = resolver
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, int, int, int], bytes] = OrderedDict()
        self._size = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        """Bytes held."""
        return self._size

    def get(self, side: str, uri: object, width: int | None) -> bytes:
        """The JPEG thumbnail of a record's image; NotServed when it may not or cannot be."""
        real = self.resolver.resolve(side, uri)
        assert isinstance(uri, str)
        try:
            st = os.stat(real)
        except OSError:
            raise NotServed("the file is gone") from None
        key = (real, st.st_size, st.st_mtime_ns, thumb_width(width))
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return hit
        thumb = make_thumbnail(self.resolver.read(side, uri), key[3])
        with self._lock:
            self.misses += 1
            if key not in self._items and len(thumb) <= self.max_bytes:
                self._items[key] = thumb
                self._size += len(thumb)
                while self._size > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._size -= len(old)
        return thumb
