"""Operations from marked functions: the one path for built-ins and plugins.

:func:`operation` reads a marked function's signature into parameters and
wraps its call in the registry's convention, ``(image, params) -> (image,
data)`` (and ``(images, params) -> [(image, data), ...]`` for a batch). The
wrapper checks what the function gave back, so a plugin's mistake (a dict
from an image operation, a float image, data that is not JSON, a batch
answer of the wrong length) fails the image as ``op_error`` naming the step,
instead of the record or the encoder failing later.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from imgstream.ops.decorator import OpMark, mark_of
from imgstream.ops.registry import (
    BatchFn,
    FootprintFn,
    Image,
    Operation,
    OpFn,
    OpResult,
    StateFn,
    whole_image,
)
from imgstream.ops.signature import params_of


def operation(
    fn: Callable[..., Any], dist: str | None = None, version: str | None = None
) -> Operation:
    """The :class:`Operation` of a function marked by ``@imgstream.op``.

    ``dist`` and ``version`` name the plugin distribution that defines it
    (None for a built-in). A signature the schema cannot read raises TypeError.
    """
    mark = mark_of(fn)
    if mark is None:
        raise TypeError(f"{fn!r} is not marked with @imgstream.op")
    params = params_of(fn, mark.name, mark.stateful)
    help, details = _docs(fn, mark)
    batch_fn: BatchFn | None = None
    state_fn: StateFn | None = None
    if mark.kind == "batch":
        batch_fn = _batch_call(fn)
        one = _one_of(batch_fn)
    elif mark.stateful:
        state_fn = _state_call(fn, mark.kind)
        one = _fresh(state_fn)
    else:
        one = _call(fn, mark.kind)
    return Operation(
        mark.name,
        one,
        help,
        params,
        kind=mark.kind,
        details=details,
        check=mark.check,
        footprint=_footprint(mark.footprint),
        tiles=mark.tiles,
        batch_fn=batch_fn,
        dist=dist,
        version=version,
        state_fn=state_fn,
        lineage=mark.lineage,
        batch_when=mark.batch_when,
        equals=mark.equals or "",
    )


def operations_in(
    module: ModuleType, dist: str | None = None, version: str | None = None
) -> list[Operation]:
    """The operations a module defines: its marked functions (also those its package's
    submodules define and it imports), never ones imported from elsewhere."""
    prefix = module.__name__ + "."
    found: dict[int, Callable[..., Any]] = {}
    for value in vars(module).values():
        owner = getattr(value, "__module__", None) or ""
        if mark_of(value) is not None and (owner == module.__name__ or owner.startswith(prefix)):
            found.setdefault(id(value), value)
    return [operation(fn, dist, version) for fn in found.values()]


def _docs(fn: Callable[..., Any], mark: OpMark) -> tuple[str, str]:
    """(help, details): given, or the docstring's first paragraph and the rest."""
    first, _, rest = (inspect.getdoc(fn) or "").partition("\n\n")
    help = mark.help if mark.help is not None else " ".join(first.split())
    details = mark.details if mark.details is not None else rest.strip()
    return help, details


def _footprint(given: int | FootprintFn | None) -> FootprintFn:
    if given is None:
        return whole_image
    if isinstance(given, int):
        return lambda params: given
    return given


def _call(fn: Callable[..., Any], kind: str) -> OpFn:
    def call(img: Image, params: Mapping[str, Any]) -> OpResult:
        return _result(kind, img, fn(img, **params))

    return call


def _state_call(fn: Callable[..., Any], kind: str) -> StateFn:
    def call(img: Image, state: dict[str, Any], params: Mapping[str, Any]) -> OpResult:
        return _result(kind, img, fn(img, state, **params))

    return call


def _fresh(call: StateFn) -> OpFn:
    """A stateful operation on one image alone: the first frame of its source."""

    def one(img: Image, params: Mapping[str, Any]) -> OpResult:
        return call(img, {}, params)

    return one


def _batch_call(fn: Callable[..., Any]) -> BatchFn:
    def call(images: Sequence[Image], params: Mapping[str, Any]) -> list[OpResult]:
        items = fn(list(images), **params)
        if not isinstance(items, list):
            raise TypeError(f"returned {type(items).__name__}; a batch operation returns a list")
        if len(items) != len(images):
            raise ValueError(f"returned {len(items)} items for {len(images)} images")
        return [_result("batch", img, item) for img, item in zip(images, items, strict=True)]

    return call


def _one_of(batch: BatchFn) -> OpFn:
    """A batch operation run on one image: a batch of one."""

    def call(img: Image, params: Mapping[str, Any]) -> OpResult:
        return batch([img], params)[0]

    return call


def _result(kind: str, img: Image, value: Any) -> OpResult:
    """``(image, data)`` from what an operation function returned, checked."""
    data: Any = None
    if isinstance(value, tuple):
        if len(value) != 2:
            raise TypeError(f"returned a tuple of {len(value)}; expected (image, dict)")
        out, data = value
    elif isinstance(value, Mapping) and kind != "image":
        out, data = img, value
    elif kind == "analysis":
        raise TypeError(f"returned {type(value).__name__}; an analysis operation returns a dict")
    else:
        out = value
    if not isinstance(out, np.ndarray):
        expected = "an image or a dict" if kind == "batch" else "an image (numpy array)"
        raise TypeError(f"returned {type(out).__name__}; expected {expected}")
    if img.dtype == np.uint8 and out.dtype != np.uint8:
        raise TypeError(f"returned a {out.dtype} image for an 8-bit one; return uint8")
    if data is not None:
        if not isinstance(data, Mapping):
            raise TypeError(f"returned {type(data).__name__} as its data; expected a dict")
        _check_json(data)
    return out, data


def _numpy_to_json(value: Any) -> Any:
    """numpy scalars and arrays as the record will hold them; anything else is not JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value.tolist()
    raise TypeError(f"a {type(value).__name__} is not JSON")


#: Checks data the way the record's encoder will take it (C speed; NaN and inf refused).
_JSON = json.JSONEncoder(default=_numpy_to_json, allow_nan=False, check_circular=False)


def _check_json(data: Mapping[str, Any]) -> None:
    """Raise TypeError unless ``data`` can go into a JSON record."""
    try:
        _JSON.encode(data)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"returned data that is not JSON: {exc}") from None
