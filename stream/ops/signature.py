"""A function's signature is its operation's parameter schema (Typer's rule).

An operation is a plain function: its first parameter is the image (or, for
a ``batch`` operation, the list of images), and its keyword-only parameters
are the spec's parameters. Each one's annotation gives the type, its default
the default::

    def posterize(img, *, levels: Annotated[int, Arg("levels", min=2)] = 4,
                  mode: Literal["floor", "round"] = "floor") -> Image: ...

* ``int``, ``float``, ``bool``, ``str``: the type (``X | None`` with the
  default ``None``: a parameter that may stay unset);
* ``Literal[...]``: the choices (all of one of those types);
* ``Annotated[T, Arg(help, min=, max=)]``: help text and a range.

Every parameter needs a default, so a spec may leave any of them out and the
canonical form can fill them in. A signature that breaks these rules raises
``TypeError`` naming the operation and the parameter when the registry is
built (the annotations are read then, once the module has been imported
whole, so they may name what the module defines below the function).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from imgstream.errors import SpecError
from imgstream.ops.decorator import Arg
from imgstream.ops.registry import Param

#: The types a spec's text can be parsed into (:meth:`Param.parse`).
TYPES = (int, float, bool, str)

_EMPTY = inspect.Parameter.empty


def params_of(fn: Callable[..., Any], op: str, stateful: bool = False) -> tuple[Param, ...]:
    """The parameters of the function of operation ``op``, in signature order
    (a ``stateful`` one takes the image and the state positionally)."""
    where = f"@imgstream.op({op!r})"
    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise TypeError(f"{where}: *args and **kwargs cannot be given by a spec")
    positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    if stateful and positional != 2:
        raise TypeError(
            f"{where}: a stateful operation takes two positional arguments, the image and the state"
        )
    if not stateful and positional != 1:
        raise TypeError(f"{where}: takes one positional argument, the image (or the images)")
    keyword = [p for p in params if p.kind is p.KEYWORD_ONLY]
    annotated = {p.name: p.annotation for p in keyword if p.annotation is not _EMPTY}
    try:
        hints = _hints(fn, annotated)
    except Exception as exc:  # a name the module does not define, a typo in a string
        raise TypeError(f"{where}: cannot read its annotations: {exc}") from exc
    return tuple(_param(op, p.name, hints.get(p.name, _EMPTY), p.default) for p in keyword)


def _hints(fn: Callable[..., Any], annotations: dict[str, Any]) -> dict[str, Any]:
    """The keyword-only annotations evaluated in the function's module (``from __future__
    import annotations`` leaves strings); the image's annotation is never evaluated."""
    holder = types.SimpleNamespace(__annotations__=annotations)
    module_globals = getattr(inspect.unwrap(fn), "__globals__", {})
    return typing.get_type_hints(holder, globalns=module_globals, include_extras=True)


def _param(op: str, name: str, hint: Any, default: Any) -> Param:
    """One :class:`Param` from an evaluated annotation and a default."""
    where = f"@imgstream.op({op!r}): parameter {name!r}"
    if default is _EMPTY:
        raise TypeError(f"{where} needs a default")
    arg = Arg()
    if typing.get_origin(hint) is Annotated:
        hint, *meta = typing.get_args(hint)
        arg = next((m for m in meta if isinstance(m, Arg)), arg)
    optional = False
    if typing.get_origin(hint) in (Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(members) != 1 or default is not None:
            raise TypeError(f"{where}: a union can only be 'T | None', with the default None")
        hint, optional = members[0], True
    choices: tuple[Any, ...] | None = None
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        kinds = {type(c) for c in choices}
        if len(kinds) != 1 or not kinds <= set(TYPES):
            raise TypeError(f"{where}: Literal choices must all be int, all float, all str...")
        hint = type(choices[0])
    if hint not in TYPES:
        raise TypeError(f"{where}: annotate it int, float, bool, str or Literal[...], not {hint!r}")
    if hint is float and type(default) is int:
        default = float(default)  # k=1 and k=1.0 have one canonical form
    param = Param(name, hint, default, arg.help, choices, arg.min, arg.max)
    if default is None:
        if not optional:
            raise TypeError(f"{where}: the default None needs '{hint.__name__} | None'")
        return param
    if type(default) is not hint:
        raise TypeError(f"{where}: the default {default!r} is not a {hint.__name__}")
    try:
        param.check(op, default)
    except SpecError as exc:
        raise TypeError(f"{where}: the default is not valid: {exc}") from None
    return param
