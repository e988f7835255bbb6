"""The operation registry: named operations with typed parameters.

An :class:`Operation` maps an image (numpy array, OpenCV's BGR order) and
its validated parameters to an image and, for analysis operations, a dict of
data for the result record; a ``batch`` operation also maps the images of one
micro-batch in one call. Operations are made from plain functions by the
:func:`imgstream.op` decorator (:mod:`imgstream.ops.decorator`), built-ins
and plugins alike. :class:`Registry` is an object built by
:func:`imgstream.ops.build_registry`; there is no module-level mutable state.

NumPy is imported for type checking only: ``import imgstream`` (which
re-exports the decorator) stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from imgstream.errors import ConfigError, SpecError

if TYPE_CHECKING:
    import numpy as np

Image: TypeAlias = "np.ndarray[Any, Any]"
#: What one image's call gives: the image (new or the same) and data for the record.
OpResult: TypeAlias = "tuple[Image, Mapping[str, Any] | None]"
OpFn = Callable[[Image, Mapping[str, Any]], OpResult]
#: A batch operation: the images of one micro-batch in, one result per image out.
BatchFn = Callable[[Sequence[Image], Mapping[str, Any]], list[OpResult]]
#: A stateful operation with one source's state for its step (updated in place).
StateFn = Callable[[Image, dict[str, Any], Mapping[str, Any]], OpResult]
#: Validates the parameters together (one parameter depending on another).
CheckFn = Callable[[Mapping[str, Any]], None]
#: The radius in pixels an operation reads around each output pixel, or None
#: when the output depends on the whole image (it cannot run on tiles).
FootprintFn = Callable[[Mapping[str, Any]], "int | None"]
#: What a result's ``lineage.versions`` records about a step, from its parameters
#: (a model's sha256, the runtime and the providers it runs on).
LineageFn = Callable[[Mapping[str, Any]], Mapping[str, str]]
#: Whether a batch operation needs the micro-batch together for these parameters.
BatchWhenFn = Callable[[Mapping[str, Any]], bool]


def point(params: Mapping[str, Any]) -> int:
    """Footprint of a per-pixel operation."""
    return 0


def whole_image(params: Mapping[str, Any]) -> None:
    """Footprint of an operation that needs the whole image (histograms, geometry)."""
    return None


def radius(key: str, scale: int = 1) -> FootprintFn:
    """Footprint of ``scale * (params[key] // 2)``: a k x k kernel read ``scale`` times."""
    return lambda params: scale * (int(params[key]) // 2)


#: How an operation runs on a tile: on the tile with its halo ("image"), on
#: the core only (statistics that are merged later, "core"), or on the tile
#: with its halo with boxes and points shifted to the parent's coordinates
#: (detections, merged across seams later, "boxes").
TILE_MODES = ("image", "core", "boxes")

#: What an operation gives: ``image`` a new image (and maybe data), ``analysis``
#: data with the image passed on (maybe drawn on), ``batch`` either, for every
#: image of a micro-batch in one call.
KINDS = ("image", "analysis", "batch")


@dataclass(frozen=True)
class Param:
    """One typed parameter of an operation."""

    name: str
    type: type
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None

    def parse(self, op: str, text: str) -> Any:
        """Convert the spec text of this parameter, or raise SpecError.

        An optional flag (``bool | None``, unset by default) is true or unset:
        ``false`` parses as unset, so spelling it out leaves the canonical form
        alone (a flag added to an operation keeps the hashes of its pipelines).
        """
        where = f"operation {op!r}: parameter {self.name!r}"
        value: Any
        try:
            if self.type is bool:
                lowered = text.lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                value = lowered in ("true", "1", "yes")
                if not value and self.default is None:
                    return None
            elif self.type is int:
                value = int(text)
            elif self.type is float:
                value = float(text)
                if value != value or value in (float("inf"), float("-inf")):
                    raise ValueError(text)
            else:
                value = text
        except ValueError:
            raise SpecError(f"{where} expects {self.type.__name__}, got {text!r}") from None
        return self.check(op, value)

    def check(self, op: str, value: Any) -> Any:
        """Range and choice checks; returns the value."""
        where = f"operation {op!r}: parameter {self.name!r}"
        if self.choices is not None and value not in self.choices:
            valid = ", ".join(str(c) for c in self.choices)
            raise SpecError(f"{where} must be one of {valid}, got {value!r}")
        if self.min is not None and value < self.min:
            raise SpecError(f"{where} must be >= {self.min}, got {value!r}")
        if self.max is not None and value > self.max:
            raise SpecError(f"{where} must be <= {self.max}, got {value!r}")
        return value

    def describe(self) -> str:
        """One line: name, type, default, constraints, help."""
        default = "(unset)" if self.default is None else repr(self.default)
        bits = [f"{self.name}: {self.type.__name__} = {default}"]
        if self.choices is not None:
            bits.append("one of " + "|".join(str(c) for c in self.choices))
        if self.min is not None and self.max is not None:
            bits.append(f"range [{self.min}, {self.max}]")
        elif self.min is not None:
            bits.append(f">= {self.min}")
        elif self.max is not None:
            bits.append(f"<= {self.max}")
        if self.help:
            bits.append(self.help)
        return "  ".join(bits)


def normalise(dist: str) -> str:
    """A distribution name as pip compares them (PEP 503): lower case, runs of -_. as -."""
    return re.sub(r"[-_.]+", "-", dist).lower()


@dataclass(frozen=True)
class Operation:
    """A named image operation.

    ``fn`` takes one image and the parameters; a ``batch`` operation also has
    ``batch_fn`` for the whole micro-batch (its ``fn`` runs a batch of one),
    and maybe ``batch_when``: the parameters for which it needs the
    micro-batch together (for the others it runs image by image, see
    :meth:`batches`). ``lineage`` gives what a result's lineage records about
    a step. A plugin's operation names its distribution and version
    (``dist``, normalised as pip does, and ``version``); a built-in has
    neither.
    """

    name: str
    fn: OpFn
    help: str
    params: tuple[Param, ...] = ()
    kind: str = "image"
    details: str = ""
    check: CheckFn | None = None
    footprint: FootprintFn = point
    tiles: str = "image"
    batch_fn: BatchFn | None = None
    dist: str | None = None
    version: str | None = None
    #: A stateful operation's call with the source's state: ``(image, state, params)``.
    state_fn: StateFn | None = None
    lineage: LineageFn | None = None
    batch_when: BatchWhenFn | None = None
    #: The library call the operation equals, pixel for pixel ("" if none is named).
    equals: str = ""
    _by_name: dict[str, Param] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"operation {self.name!r}: kind must be one of {KINDS}")
        if (self.kind == "batch") != (self.batch_fn is not None):
            raise ValueError(f"operation {self.name!r}: a batch_fn is for (and needed by) batch")
        if self.tiles not in TILE_MODES:
            raise ValueError(f"operation {self.name!r}: tiles must be one of {TILE_MODES}")
        if self.state_fn is not None and self.kind == "batch":
            raise ValueError(f"operation {self.name!r}: a batch operation cannot be stateful")
        if self.batch_when is not None and self.kind != "batch":
            raise ValueError(f"operation {self.name!r}: batch_when is for a batch operation")
        self._by_name.update({p.name: p for p in self.params})

    @property
    def stateful(self) -> bool:
        """Whether it remembers each source's past (``state_fn``)."""
        return self.state_fn is not None

    def batches(self, params: Mapping[str, Any]) -> bool:
        """Whether a step with these parameters runs once per micro-batch (a ``batch``
        operation, unless its ``batch_when`` says these parameters need no batch: then
        each image runs alone, a batch of one, like an analysis step)."""
        return self.kind == "batch" and (self.batch_when is None or self.batch_when(params))

    @property
    def origin(self) -> str:
        """Where the operation comes from: ``the built-ins`` or ``DIST VERSION``."""
        return "the built-ins" if self.dist is None else f"{self.dist} {self.version}"

    @property
    def qualified(self) -> str:
        """The name as the canonical spec writes it: ``name`` or ``name@dist==version``."""
        return self.name if self.dist is None else f"{self.name}@{self.dist}=={self.version}"

    def param(self, name: str) -> Param:
        """A parameter by name; an unknown name lists the valid ones."""
        try:
            return self._by_name[name]
        except KeyError:
            valid = ", ".join(self._by_name) or "(none)"
            raise SpecError(
                f"operation {self.name!r} has no parameter {name!r}; valid: {valid}"
            ) from None

    def defaults(self) -> dict[str, Any]:
        """Every parameter at its default (None: unset)."""
        return {p.name: p.default for p in self.params}

    def spec_error(self, message: str) -> SpecError:
        """A SpecError that names this operation."""
        return SpecError(f"operation {self.name!r}: {message}")


class Registry:
    """Operations by name."""

    def __init__(self, operations: tuple[Operation, ...] = ()) -> None:
        self._ops: dict[str, Operation] = {}
        for op in operations:
            self.add(op)

    def add(self, op: Operation) -> None:
        """Register an operation; a name taken already is an error naming both."""
        if op.name in self._ops:
            first = self._ops[op.name].origin
            raise ConfigError(
                f"operation {op.name!r} is defined twice: by {first} and by {op.origin}"
            )
        self._ops[op.name] = op

    def get(self, name: str) -> Operation:
        """An operation by name; an unknown name lists the valid ones."""
        try:
            return self._ops[name]
        except KeyError:
            raise SpecError(
                f"unknown operation {name!r}; valid: {', '.join(sorted(self._ops))}"
            ) from None

    def __iter__(self) -> Iterator[Operation]:
        return iter(sorted(self._ops.values(), key=lambda op: op.name))

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def __len__(self) -> int:
        return len(self._ops)
