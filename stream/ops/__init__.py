"""Image operations: the registry and one module per family."""

from __future__ import annotations

from imgstream.ops import analysis, color, detect, edges, enhance, filters, geometry, segment
from imgstream.ops.registry import Image, Operation, Param, Registry

__all__ = ["Image", "Operation", "Param", "Registry", "build_registry"]

_FAMILIES = (color, enhance, geometry, filters, edges, segment, analysis, detect)


def build_registry() -> Registry:
    """A registry holding every built-in operation."""
    return Registry(tuple(op for family in _FAMILIES for op in family.OPERATIONS))
