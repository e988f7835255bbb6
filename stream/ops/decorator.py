"""``@imgstream.op``: the one way an operation is defined, built-in or plugin.

The decorator only marks the function (it returns it unchanged, still a plain
function a test can call); :func:`imgstream.ops.build_registry` finds the
marked functions of the built-in modules and of each plugin module and turns
each into an :class:`~imgstream.ops.registry.Operation`
(:mod:`imgstream.ops.adapters`), reading the parameters from its signature
(:mod:`imgstream.ops.signature`; :class:`Arg` adds help and a range to a
parameter). Nothing is registered at import time.

The kinds, and what the function returns:

* ``image``: takes an image, returns the new image (8-bit when given 8-bit);
* ``analysis``: takes an image, returns a JSON-able dict stored under
  ``outputs[name]``; the image passes on;
* ``batch``: takes the list of images of one micro-batch (the ones still
  alive at this step of the pipeline) and returns a list with one item per
  image, in order: an image (it replaces that image) or a dict (stored under
  ``outputs[name]``, the image passes on). A batch operation that needs the
  micro-batch only for some parameters says which with ``batch_when``; for
  the others each image runs alone (a batch of one), in parallel, like an
  analysis step (``plates`` batches only to read the plates' text).

Any kind may also return ``(image, dict)`` (one per image for a batch) when
it does both (a detector that draws its boxes).

A ``stateful`` operation (``image`` or ``analysis``) remembers a source's
past: it takes a second positional argument, the state of the frame's source
for this step (a dict, empty for a source's first frame), and updates it in
place. The worker runs a source's frames through it in order, snapshots the
state with the committed offsets and restores it on assignment
(:mod:`imgstream.commits.state`). Values are numpy arrays or Python scalars.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from imgstream.ops.registry import KINDS, TILE_MODES

if TYPE_CHECKING:
    from imgstream.ops.registry import BatchWhenFn, CheckFn, FootprintFn, LineageFn

#: The attribute the decorator sets on a function it marks.
MARK = "__imgstream_op__"

#: Operation names: what a spec can spell between ``|`` and ``:``.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Arg:
    """What an annotation alone cannot say about a parameter: help text and a range.

    Used as ``Annotated[int, Arg("kernel size", min=1, max=255)]``.
    """

    help: str = ""
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class OpMark:
    """What ``@imgstream.op(...)`` said about a function (see :func:`op`)."""

    name: str
    kind: str
    help: str | None
    details: str | None
    check: CheckFn | None
    footprint: int | FootprintFn | None
    tiles: str
    stateful: bool = False
    lineage: LineageFn | None = None
    batch_when: BatchWhenFn | None = None
    equals: str | None = None


def op(
    name: str,
    *,
    kind: str = "image",
    help: str | None = None,
    details: str | None = None,
    check: CheckFn | None = None,
    footprint: int | FootprintFn | None = None,
    tiles: str = "image",
    stateful: bool = False,
    lineage: LineageFn | None = None,
    batch_when: BatchWhenFn | None = None,
    equals: str | None = None,
) -> Callable[[F], F]:
    """Mark a function as the operation ``name`` of ``kind`` (image, analysis or batch).

    Its keyword-only parameters are the operation's parameters (see
    :mod:`imgstream.ops.signature`). ``help`` is the one line ``imgstream ops``
    shows (default: the docstring's first paragraph), ``details`` the text of
    ``imgstream ops NAME`` (default: the rest of the docstring). ``check``
    validates the parameters together. ``footprint`` is the radius in pixels
    the operation reads around each output pixel (an int, or a function of the
    parameters); ``None``, the default, means it needs the whole image, so the
    pipeline is refused on tiles. ``tiles`` says how it runs on a tile:
    ``image`` (the tile with its halo), ``core`` (statistics on the core only)
    or ``boxes`` (detections shifted to the parent image). ``stateful``: the
    function takes the source's state as its second argument (see above).
    ``lineage``: a function of the parameters giving ``{key: text}`` for every
    result's ``lineage.versions`` (a model's sha256, the runtime, its
    providers). ``batch_when``: a batch operation's parameters that need the
    micro-batch together (default: all; see above). ``equals``: the library
    call the operation equals, pixel for pixel (``cv2.GaussianBlur(img, (k, k),
    0)``), shown by ``imgstream ops NAME`` and in the operations reference.
    """
    if not NAME.fullmatch(name):
        raise ValueError(f"@imgstream.op({name!r}): a name is letters, digits, '_' and '-'")
    if kind not in KINDS:
        raise ValueError(f"@imgstream.op({name!r}): kind must be one of {', '.join(KINDS)}")
    if tiles not in TILE_MODES:
        raise ValueError(f"@imgstream.op({name!r}): tiles must be one of {', '.join(TILE_MODES)}")
    if stateful and kind == "batch":
        raise ValueError(f"@imgstream.op({name!r}): a batch operation cannot be stateful")
    if batch_when is not None and kind != "batch":
        raise ValueError(f"@imgstream.op({name!r}): batch_when is for a batch operation")
    mark = OpMark(
        name, kind, help, details, check, footprint, tiles, stateful, lineage, batch_when, equals
    )

    def decorate(fn: F) -> F:
        setattr(fn, MARK, mark)
        return fn

    return decorate


def mark_of(obj: object) -> OpMark | None:
    """The mark ``@imgstream.op`` left on ``obj``, or None."""
    found = getattr(obj, MARK, None)
    return found if isinstance(found, OpMark) else None
