"""Image operations: the registry, the decorator, plugins, pipelines, and the built-ins.

``registry`` holds named operations with typed parameters; ``decorator`` is
``@imgstream.op``, ``signature`` reads an operation's parameters from its
function's signature and ``adapters`` turns a marked function into an
operation; ``plugins`` loads installed distributions' operations;
``pipeline`` parses, validates, hashes and runs a pipeline spec; ``builtin/``
holds the built-in operations, one module per family.

Built-ins and plugins are one registry, filled by one path: each family
module's functions are marked with ``@imgstream.op``, exactly as a plugin's
are, and :func:`build_registry` turns the marked functions of the families
and of every installed plugin into operations. The families (OpenCV) are
imported when a registry is built, not when this package is: ``import
imgstream`` re-exports the decorator and stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from imgstream.ops.decorator import Arg, op
from imgstream.ops.registry import Image, Operation, Param, Registry

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = ["Arg", "Image", "Operation", "Param", "Registry", "build_registry", "op"]


def build_registry(plugins: Iterable[EntryPoint] | None = None) -> Registry:
    """A registry of every built-in operation and those of the plugins.

    ``plugins``: the entry points to load (default: the installed
    ``imgstream.ops`` ones; ``()`` for the built-ins only). A plugin that
    cannot be loaded, or an operation name defined twice, raises ConfigError.
    """
    from imgstream.ops.adapters import operations_in
    from imgstream.ops.builtin import (
        analysis,
        color,
        detect,
        edges,
        enhance,
        filters,
        geometry,
        models,
        motion,
        segment,
    )
    from imgstream.ops.plugins import load_plugins

    registry = Registry()
    families = (color, enhance, geometry, filters, edges, segment, analysis, detect, motion, models)
    for family in families:
        for operation in operations_in(family):
            registry.add(operation)
    for plugin in load_plugins(plugins):
        for operation in plugin.operations:
            registry.add(operation)
    return registry
