"""Pipeline specs: parse, validate, canonicalise, hash, and run.

A spec chains operations with ``|`` and gives parameters after a colon::

    gray|clahe:clip=2.0,tile=8|resize:w=640

Parsing validates everything against a registry, so a bad spec fails at
start-up with a message that names the operation and lists what is valid.
The canonical form lists every parameter (defaults filled in, sorted by
name), so parameter order and spelled-out defaults do not change the hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stream.errors import OP_ERROR, ImageError, SpecError
from stream.ops.registry import Image, Operation, Registry


@dataclass(frozen=True)
class Step:
    """One operation with its validated parameters."""

    op: Operation
    params: Mapping[str, Any]

    def canonical(self) -> str:
        """``name`` or ``name:k=v,...`` with every parameter, sorted."""
        if not self.params:
            return self.op.name
        body = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(self.params.items()) if v is not None)
        return f"{self.op.name}:{body}" if body else self.op.name


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Pipeline:
    """A validated chain of operations."""

    steps: tuple[Step, ...]

    @property
    def canonical(self) -> str:
        """The canonical spec text."""
        return "|".join(step.canonical() for step in self.steps)

    @property
    def hash(self) -> str:
        """A short, stable hash of the canonical spec (12 hex digits)."""
        return hashlib.sha256(self.canonical.encode("utf-8")).hexdigest()[:12]

    def run(self, img: Image) -> tuple[Image, dict[str, Any]]:
        """Apply every step; return the image and analysis outputs by step name.

        An operation that fails raises ImageError(``op_error``) naming the step.
        """
        outputs: dict[str, Any] = {}
        for step in self.steps:
            try:
                img, data = step.op.fn(img, step.params)
            except ImageError:
                raise
            except Exception as exc:  # one bad image must not take the batch down
                raise ImageError(OP_ERROR, f"{step.canonical()}: {exc}") from exc
            if data is not None:
                key = step.op.name
                n = 2
                while key in outputs:
                    key = f"{step.op.name}#{n}"
                    n += 1
                outputs[key] = dict(data)
        return img, outputs


def parse_spec(spec: str, registry: Registry) -> Pipeline:
    """Parse and validate a spec; raise :class:`SpecError` naming what is wrong."""
    text = spec.strip()
    if not text:
        raise SpecError("empty pipeline spec; give at least one operation, e.g. 'gray'")
    steps = []
    for position, part in enumerate(text.split("|"), start=1):
        part = part.strip()
        if not part:
            raise SpecError(f"empty step at position {position} in {spec!r}")
        name, _, body = part.partition(":")
        op = registry.get(name.strip())
        params = op.defaults()
        seen: set[str] = set()
        if body.strip():
            for item in body.split(","):
                key, eq, value = item.partition("=")
                key = key.strip()
                if not eq or not key:
                    raise SpecError(
                        f"operation {op.name!r}: expected key=value, got {item.strip()!r}"
                    )
                if key in seen:
                    raise SpecError(f"operation {op.name!r}: parameter {key!r} given twice")
                seen.add(key)
                params[key] = op.param(key).parse(op.name, value.strip())
        elif _:
            raise SpecError(f"operation {op.name!r}: nothing after ':'")
        if op.check is not None:
            op.check(params)
        steps.append(Step(op, params))
    return Pipeline(tuple(steps))
