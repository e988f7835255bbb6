"""Partitioners: which partition of the refs topic a ref goes to.

Each strategy is a small object with ``partition(ref, n) -> int``:

* ``sequential`` round-robin in production order, so every partition gets an
  even, ordered share;
* ``random`` uniform, reproducible with a seed;
* ``source`` a stable hash of the ref's source, so one camera's frames stay
  on one partition and in order;
* ``size`` the image's shape (``meta.width`` x ``meta.height``, read by the
  producer from the header), so same-shape images meet in the same batches;
* ``phash`` a bucket of the perceptual hash (``meta.phash``): bits 1-8 of the
  DCT hash, its lowest non-DC frequencies, which near-duplicates share;
* ``parent`` the parent of a tile (``tile.parent``), so one image's tiles
  stay together and in order.

Feature strategies fall back to the ref id when the feature is missing.

Hashes are CRC-32, stable across processes and Python versions (unlike
``hash()``).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Protocol

from imgstream.errors import ConfigError
from imgstream.schema.records import ImageRef


class Partitioner(Protocol):
    """Chooses a partition in ``range(n)`` for a ref."""

    def partition(self, ref: ImageRef, n: int) -> int:
        """The partition for ``ref`` among ``n``."""
        ...


def stable_hash(text: str) -> int:
    """A process-independent 32-bit hash of a string."""
    return zlib.crc32(text.encode("utf-8"))


class Sequential:
    """Round-robin in the order refs are produced."""

    def __init__(self) -> None:
        self._next = 0

    def partition(self, ref: ImageRef, n: int) -> int:
        """The next partition in turn."""
        p = self._next % n
        self._next += 1
        return p


class Random:
    """Uniformly random, reproducible with a seed."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def partition(self, ref: ImageRef, n: int) -> int:
        """A random partition."""
        return self._rng.randrange(n)


class BySource:
    """A stable hash of the source (the id when there is none)."""

    def partition(self, ref: ImageRef, n: int) -> int:
        """The partition of the ref's source."""
        return stable_hash(ref.source if ref.source is not None else ref.id) % n


def size_class(ref: ImageRef) -> str | None:
    """``WxH`` from the ref's meta, or None."""
    meta = ref.meta or {}
    w, h = meta.get("width"), meta.get("height")
    if isinstance(w, int) and isinstance(h, int):
        return f"{w}x{h}"
    return None


def phash_bucket(ref: ImageRef) -> int | None:
    """Bits 1-8 of the 64-bit perceptual hash in ``meta.phash`` (bit 0 is the DC term)."""
    value = (ref.meta or {}).get("phash")
    if not isinstance(value, str):
        return None
    try:
        bits = int(value, 16)
    except ValueError:
        return None
    return (bits >> 55) & 0xFF


def tile_parent(ref: ImageRef) -> str | None:
    """The parent id of a tile ref, or None."""
    parent = (ref.tile or {}).get("parent")
    return parent if isinstance(parent, str) else None


class ByFeature:
    """A stable hash of a feature of the ref (the id when it has none)."""

    def __init__(self, feature: Callable[[ImageRef], object]) -> None:
        self.feature = feature

    def partition(self, ref: ImageRef, n: int) -> int:
        """The partition of the ref's feature."""
        value = self.feature(ref)
        return stable_hash(str(value) if value is not None else ref.id) % n


_STRATEGIES: dict[str, Callable[[int | None], Partitioner]] = {
    "sequential": lambda seed: Sequential(),
    "random": lambda seed: Random(seed),
    "source": lambda seed: BySource(),
    "size": lambda seed: ByFeature(size_class),
    "phash": lambda seed: ByFeature(phash_bucket),
    "parent": lambda seed: ByFeature(tile_parent),
}

STRATEGIES = tuple(_STRATEGIES)


def make_partitioner(name: str, seed: int | None = None) -> Partitioner:
    """Build a partitioner by name; an unknown name lists the valid ones."""
    try:
        factory = _STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown partitioning strategy {name!r}; valid: {', '.join(STRATEGIES)}"
        ) from None
    return factory(seed)


def partition_key(ref: ImageRef) -> bytes:
    """The message key: a tile's parent, else the source (per-source order), else the id."""
    parent = tile_parent(ref)
    if parent is not None:
        return parent.encode("utf-8")
    return (ref.source if ref.source is not None else ref.id).encode("utf-8")
