"""Partitioners: which partition of the refs topic a ref goes to.

Each strategy is a small object with ``partition(ref, n) -> int``:

* ``sequential`` round-robin in production order, so every partition gets an
  even, ordered share;
* ``random`` uniform, reproducible with a seed;
* ``source`` a stable hash of the ref's source, so one camera's frames stay
  on one partition and in order.

Hashes are CRC-32, stable across processes and Python versions (unlike
``hash()``).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Protocol

from stream.errors import ConfigError
from stream.records import ImageRef


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


_STRATEGIES: dict[str, Callable[[int | None], Partitioner]] = {
    "sequential": lambda seed: Sequential(),
    "random": lambda seed: Random(seed),
    "source": lambda seed: BySource(),
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
    """The message key of a ref: its source (keeps per-source order), else its id."""
    return (ref.source if ref.source is not None else ref.id).encode("utf-8")
