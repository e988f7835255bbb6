"""Turn what the user named (files, directories, globs, @manifests) into refs to produce.

:func:`collect_inputs` expands the inputs and adds the features a
feature-based partitioner needs; :func:`tiled_refs` replaces the images to
tile by their tiles. Bad values raise :class:`~imgstream.errors.ConfigError`
naming the flag.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from imgstream.errors import ConfigError
from imgstream.producers.features import ENRICH
from imgstream.producers.files import Found, Skip, expand_inputs
from imgstream.schema.records import ImageRef


def collect_inputs(
    inputs: Sequence[str],
    source: str | None,
    partition_by: str,
    on_skip: Skip,
    now_ms: int | None = None,
) -> list[Found]:
    """Every input file as a Found (ref + root), enriched for ``partition_by``."""
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    found = list(expand_inputs(inputs, now_ms, source, on_skip))
    enrich = ENRICH.get(partition_by)
    if enrich is not None:
        found = [Found(enrich(f.ref), f.root) for f in found]
    return found


def tiled_refs(
    found: Sequence[Found], tile: int | None, overlap: int, store: str, over: int | None
) -> tuple[list[ImageRef], list[str]]:
    """Refs to produce (tiles in place of tiled images) and the tiled parents' ids."""
    if tile is None:
        return [f.ref for f in found], []
    from imgstream.producers.tiles import expand_tiles

    if tile < 16:
        raise ConfigError("--tile must be at least 16")
    if overlap < 0 or overlap >= tile:
        raise ConfigError("--overlap must be between 0 and the tile size")
    refs: list[ImageRef] = []
    parents: list[str] = []
    for item, tiles in expand_tiles(list(found), tile, overlap, store, over):
        if tiles is None:
            refs.append(item.ref)
        else:
            refs += tiles
            parents.append(item.ref.id)
    return refs, parents
