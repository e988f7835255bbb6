"""Image operations: the registry and one module per family."""

from __future__ import annotations

from stream.ops import color
from stream.ops.registry import Image, Operation, Param, Registry

__all__ = ["Image", "Operation", "Param", "Registry", "build_registry"]


def build_registry() -> Registry:
    """A registry holding every built-in operation."""
    return Registry(color.OPERATIONS)
