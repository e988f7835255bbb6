"""``infer``'s parameters (:class:`InferSpec`) and the model input they must fit.

:class:`InferSpec` checks the parameters alone (``mean``/``std`` parsed by
:func:`parse_channels`: one number, or three joined by ``/``);
:func:`check_input` checks them against the loaded model's input and answers
the :class:`InputInfo` that :class:`~imgstream.models.onnx.Model` feeds. Both
raise a one-line :class:`~imgstream.errors.ConfigError` (exit 2); the rules
are listed in :mod:`imgstream.models.onnx`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgstream.errors import ConfigError

OP = "infer"

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def parse_channels(name: str, value: Any) -> tuple[float, ...]:
    """``0.5`` or ``0.485/0.456/0.406`` as a tuple of floats; ConfigError naming ``name``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        parts = [str(value)]
    else:
        parts = str(value).split("/")
    try:
        numbers = tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"{OP}: parameter {name!r} expects a number or numbers joined by '/', got {value!r}"
        ) from None
    if len(numbers) not in (1, 3) or not all(np.isfinite(numbers)):
        raise ConfigError(
            f"{OP}: parameter {name!r} expects 1 or 3 finite numbers joined by '/', got {value!r}"
        )
    return numbers


@dataclass(frozen=True)
class InferSpec:
    """The parameters of ``infer``, checked alone (:class:`Model` checks them with the model)."""

    model: str
    size: int | None = None
    w: int | None = None
    h: int | None = None
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    rgb: bool = True
    labels: str | None = None
    top: int = 5
    #: The most images in one ``session.run`` when the batch axis is dynamic (0: all).
    batch: int = 0

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError(f"{OP}: parameter 'model' is required (a path or s3:// URI)")
        if self.size is not None and (self.w is not None or self.h is not None):
            raise ConfigError(f"{OP}: give size= or w= and h=, not both")
        if (self.w is None) != (self.h is None):
            raise ConfigError(f"{OP}: w= and h= go together")
        for name in ("size", "w", "h"):
            v = getattr(self, name)
            if v is not None and not 1 <= v <= 16384:
                raise ConfigError(f"{OP}: parameter {name!r} must be in [1, 16384], got {v}")
        if not np.isfinite(self.scale):
            raise ConfigError(f"{OP}: parameter 'scale' must be finite, got {self.scale}")
        if any(s == 0 for s in self.std):
            raise ConfigError(f"{OP}: parameter 'std' must not be 0")
        if self.batch < 0:
            raise ConfigError(f"{OP}: parameter 'batch' must be >= 0, got {self.batch}")
        if self.top < 1:
            raise ConfigError(f"{OP}: parameter 'top' must be >= 1, got {self.top}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> InferSpec:
        """From a spec's parameters (``mean``/``std`` as text or numbers; None: default)."""
        given = {k: v for k, v in params.items() if v is not None}
        for name in ("mean", "std"):
            if name in given:
                given[name] = parse_channels(name, given[name])
        try:
            return cls(**given)
        except TypeError as exc:
            raise ConfigError(f"{OP}: {exc}") from None

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The (width, height) asked for, or None to take the model's."""
        if self.size is not None:
            return self.size, self.size
        if self.w is not None and self.h is not None:
            return self.w, self.h
        return None


@dataclass(frozen=True)
class InputInfo:
    """The model's image input, as checked at start-up."""

    name: str
    channels: int
    height: int
    width: int
    #: The fixed batch size, or None when the batch axis is dynamic.
    batch: int | None
    dtype: type


def fixed_dim(value: Any) -> int | None:
    """A fixed dimension, or None for a dynamic one (a name, None, or <= 0)."""
    return value if isinstance(value, int) and value > 0 else None


def check_input(session: Any, spec: InferSpec) -> InputInfo:
    """The input :class:`Model` feeds; ConfigError when the model's input does not fit."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ConfigError(f"{OP}: the model has {len(inputs)} inputs ({names}); infer feeds one")
    inp = inputs[0]
    shape = list(inp.shape)
    where = f"{OP}: model input {inp.name!r} {shape}"
    if inp.type not in _FLOAT_TYPES:
        raise ConfigError(f"{where} is {inp.type}; infer feeds tensor(float)")
    if len(shape) != 4:
        raise ConfigError(f"{where} has rank {len(shape)}; infer feeds NCHW images (rank 4)")
    batch, channels, height, width = (fixed_dim(d) for d in shape)
    if channels not in (1, 3):
        hint = " (NHWC is not supported)" if fixed_dim(shape[3]) in (1, 3) else ""
        raise ConfigError(f"{where} must have 1 or 3 channels on axis 1{hint}")
    asked = spec.input_size
    if height is None or width is None:
        if asked is None:
            raise ConfigError(f"{where} has a dynamic height or width: give size= (or w= and h=)")
        width, height = asked
    elif asked is not None and asked != (width, height):
        raise ConfigError(
            f"{where} is {width}x{height} (w x h); size= asks for {asked[0]}x{asked[1]}"
        )
    for name in ("mean", "std"):
        n = len(getattr(spec, name))
        if n not in (1, channels):
            raise ConfigError(
                f"{OP}: parameter {name!r} has {n} values; the model has {channels} channel(s)"
            )
    return InputInfo(inp.name, channels, height, width, batch, _FLOAT_TYPES[inp.type])
