"""Pipeline specs: parse, validate, canonicalise, hash, and run.

A spec chains operations with ``|`` and gives parameters after a colon::

    gray|clahe:clip=2.0,tile=8|resize:w=640

Parsing validates everything against a registry, so a bad spec fails at
start-up with a message that names the operation and lists what is valid.
The canonical form lists every parameter (defaults filled in, sorted by
name), so parameter order and spelled-out defaults do not change the hash.

A plugin's operation is written with its distribution and version in the
canonical form, ``name@dist==version``, e.g.
``posterize@imgstream-example-plugin==0.1.0:levels=4``: a new version of a
plugin is a new pipeline hash, so its outputs go to a new folder. A spec
may pin a plugin the same way (parsing refuses another installed version);
a built-in's canonical form has no ``@``.

Running: :meth:`Pipeline.run` takes one image (a ``batch`` step runs as a
batch of one); :meth:`Pipeline.run_many` takes the images of a micro-batch
and calls each ``batch`` step once with every image still alive at it (a
batch operation whose parameters need no batch, ``plates`` without
``read``, runs image by image: :attr:`Step.batched`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from imgstream.errors import OP_ERROR, ImageError, SpecError
from imgstream.ops.registry import Image, Operation, OpResult, Registry, normalise
from imgstream.tiling import TileView

T = TypeVar("T")
R = TypeVar("R")
#: What :meth:`Pipeline.run_many` gives per image: its output and data, or its failure.
Outcome = tuple[Image, dict[str, Any]] | ImageError
#: ``map``'s shape: how run_many spreads per-image work (e.g. ``ThreadPoolExecutor.map``).
Mapper = Callable[[Callable[[T], R], Iterable[T]], Iterable[R]]


@dataclass(frozen=True)
class Step:
    """One operation with its validated parameters."""

    op: Operation
    params: Mapping[str, Any]

    def canonical(self) -> str:
        """``name`` or ``name:k=v,...`` with every parameter, sorted (``name@dist==version``
        for a plugin's operation)."""
        name = self.op.qualified
        if not self.params:
            return name
        body = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(self.params.items()) if v is not None)
        return f"{name}:{body}" if body else name

    @property
    def batched(self) -> bool:
        """Whether this step runs once per micro-batch (:meth:`Operation.batches`)."""
        return self.op.batches(self.params)

    def apply(
        self, img: Image, tile: TileView | None = None, state: dict[str, Any] | None = None
    ) -> OpResult:
        """This step on one image (a batch step: a batch of one); see :meth:`apply_many`.

        A stateful step updates ``state`` (its source's, for this step) in place;
        without one it sees a source's first frame.
        """
        if state is not None and self.op.state_fn is not None:
            return self._finish(
                img, tile, self.op.state_fn(self._input(img, tile), state, self.params)
            )
        return self._finish(img, tile, self.op.fn(self._input(img, tile), self.params))

    def apply_many(
        self, images: Sequence[Image], tiles: Sequence[TileView | None]
    ) -> list[OpResult]:
        """This step on the images of a micro-batch: one call of a ``batch`` operation
        (another kind runs per image).

        As on one image, a ``core`` step sees each tile's core and a ``boxes``
        step's detections move to the parent's coordinates.
        """
        if self.op.batch_fn is None or not self.batched:
            return [self.apply(img, tile) for img, tile in zip(images, tiles, strict=True)]
        inputs = [self._input(img, tile) for img, tile in zip(images, tiles, strict=True)]
        results = self.op.batch_fn(inputs, self.params)
        return [
            self._finish(img, tile, result)
            for img, tile, result in zip(images, tiles, results, strict=True)
        ]

    def _input(self, img: Image, tile: TileView | None) -> Image:
        if tile is not None and self.op.tiles == "core":
            c = tile.core
            return img[c.y : c.y + c.h, c.x : c.x + c.w]
        return img

    def _finish(self, img: Image, tile: TileView | None, result: OpResult) -> OpResult:
        out, data = result
        if tile is None:
            return out, data
        if self.op.tiles == "core":
            return img, data  # statistics of the core; the tile itself passes on
        if self.op.tiles == "boxes" and data is not None:
            return out, tile.to_parent(data)
        return out, data

    def failed(self, exc: Exception) -> ImageError:
        """The failure of an image this step raised ``exc`` on: an ImageError as it is,
        anything else ``op_error`` naming the step."""
        if isinstance(exc, ImageError):
            return exc
        return ImageError(OP_ERROR, f"{self.canonical()}: {exc}")


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

    def footprint(self) -> int | None:
        """Pixels of halo a tile needs so its core equals the whole-image result (None: never)."""
        total = 0
        for step in self.steps:
            r = step.op.footprint(step.params)
            if r is None:
                return None
            total += r
        return total

    def whole_image_steps(self) -> list[str]:
        """Steps that need the whole image and so cannot run on tiles."""
        return [s.canonical() for s in self.steps if s.op.footprint(s.params) is None]

    @property
    def has_batch_steps(self) -> bool:
        """Whether a step runs once per micro-batch (run it with :meth:`run_many`)."""
        return any(step.batched for step in self.steps)

    def versions(self) -> dict[str, str]:
        """What every result's ``lineage.versions`` records about the steps.

        The plugin distributions they come from, ``{dist: version}``, and what
        each step's ``lineage`` gives (a model's sha256, ONNX Runtime's version
        and the providers it runs on). A key a later step gives another value
        is numbered as outputs are (``infer.model_sha256#2``).
        """
        out = {s.op.dist: s.op.version for s in self.steps if s.op.dist and s.op.version}
        for step in self.steps:
            if step.op.lineage is None:
                continue
            for key, given in step.op.lineage(step.params).items():
                value, name, n = str(given), key, 2
                while out.get(name, value) != value:
                    name, n = f"{key}#{n}", n + 1
                out[name] = value
        return out

    @property
    def stateful(self) -> bool:
        """Whether a step remembers each source's past (run a source's frames in order)."""
        return any(step.op.stateful for step in self.steps)

    def run(
        self,
        img: Image,
        tile: TileView | None = None,
        state: dict[str, dict[str, Any]] | None = None,
    ) -> tuple[Image, dict[str, Any]]:
        """Apply every step; return the image and analysis outputs by step name.

        A ``batch`` step runs as a batch of one. An operation that fails raises
        ImageError(``op_error``) naming the step. ``state`` is the frame's
        source's state, by stateful step (:meth:`state_key`): each such step
        works on a copy of its entry and replaces it only when it succeeds, so
        a failed frame leaves the state as it was and earlier entries are never
        changed (a caller may keep them as versions). Without ``state`` a
        stateful step sees its source's first frame.
        """
        return self._run_steps(self.steps, img, tile, {}, state)

    def state_key(self, index: int) -> str:
        """The key of step ``index``'s state in a source's state: ``{index}:{name}``."""
        return f"{index}:{self.steps[index].op.name}"

    def run_many(
        self,
        images: Sequence[Image],
        tiles: Sequence[TileView | None] | None = None,
        mapper: Mapper[Any, Any] = map,
    ) -> list[Outcome]:
        """Apply every step to the images of one micro-batch; one outcome per image, in order.

        Steps between batch steps run per image, spread by ``mapper`` (``map``,
        or a thread pool's ``map``: each image runs that stretch as one task).
        Each ``batch`` step is one call over the images still alive at it: an
        image whose earlier step failed has dropped out with its ImageError. A
        batch call that raises, or answers with the wrong number or kind of
        items, fails every image of that call with ``op_error`` naming the step.
        """
        views: list[TileView | None] = [None] * len(images) if tiles is None else list(tiles)
        if len(views) != len(images):
            raise ValueError(f"{len(images)} images but {len(views)} tiles")
        current = list(images)
        outputs: list[dict[str, Any]] = [{} for _ in current]
        errors: dict[int, ImageError] = {}
        for batch, steps in _stretches(self.steps):
            alive = [i for i in range(len(current)) if i not in errors]
            if not alive:
                break
            if batch is None:
                stretch = partial(self._stretch, steps, current, views, outputs)
                for i, got in zip(alive, mapper(stretch, alive), strict=True):
                    if isinstance(got, ImageError):
                        errors[i] = got
                    else:
                        current[i] = got
                continue
            try:
                results = batch.apply_many([current[i] for i in alive], [views[i] for i in alive])
            except Exception as exc:  # the call failed: every image of it did
                errors.update(dict.fromkeys(alive, batch.failed(exc)))
                continue
            for i, (img, data) in zip(alive, results, strict=True):
                current[i] = img
                _store(outputs[i], batch, data)
        return [errors[i] if i in errors else (current[i], outputs[i]) for i in range(len(current))]

    def _stretch(
        self,
        steps: tuple[Step, ...],
        images: list[Image],
        views: list[TileView | None],
        outputs: list[dict[str, Any]],
        i: int,
    ) -> Image | ImageError:
        """Image ``i`` through per-image steps: its new image, or its failure."""
        try:
            return self._run_steps(steps, images[i], views[i], outputs[i])[0]
        except ImageError as exc:
            return exc

    def _run_steps(
        self,
        steps: Iterable[Step],
        img: Image,
        tile: TileView | None,
        outputs: dict[str, Any],
        state: dict[str, dict[str, Any]] | None = None,
    ) -> tuple[Image, dict[str, Any]]:
        for index, step in enumerate(steps):
            work = None
            if state is not None and step.op.stateful:
                work = copy_state(state.get(self.state_key(index), {}))
            try:
                img, data = step.apply(img, tile, work)
            except ImageError:
                raise
            except Exception as exc:  # one bad image must not take the batch down
                raise step.failed(exc) from exc
            if state is not None and work is not None:
                state[self.state_key(index)] = work
            _store(outputs, step, data)
        return img, outputs


def copy_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of one step's state whose arrays the step may change in place."""
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in state.items()}


def _stretches(steps: tuple[Step, ...]) -> Iterator[tuple[Step | None, tuple[Step, ...]]]:
    """The steps cut at each batch step: ``(None, per-image steps)`` or ``(batch step, ())``."""
    run: list[Step] = []
    for step in steps:
        if not step.batched:
            run.append(step)
            continue
        if run:
            yield None, tuple(run)
            run = []
        yield step, ()
    if run:
        yield None, tuple(run)


def _store(outputs: dict[str, Any], step: Step, data: Mapping[str, Any] | None) -> None:
    """A step's data under its name (``name#2``, ... when the name is there already)."""
    if data is None:
        return
    key = step.op.name
    n = 2
    while key in outputs:
        key = f"{step.op.name}#{n}"
        n += 1
    outputs[key] = dict(data)


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
        name, at, pin = name.partition("@")
        op = registry.get(name.strip())
        if at:
            _check_pin(op, pin.strip())
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
    pipeline = Pipeline(tuple(steps))
    if pipeline.stateful and pipeline.has_batch_steps:
        raise SpecError(
            "a pipeline cannot have both a stateful step (it runs a source's frames in "
            "order) and a batch step (it runs a micro-batch together)"
        )
    return pipeline


def _check_pin(op: Operation, pin: str) -> None:
    """``name@dist`` or ``name@dist==version``: the installed operation must be that one."""
    if op.dist is None:
        raise SpecError(f"operation {op.name!r} is built in; '@{pin}' pins a plugin's version")
    dist, eq, version = pin.partition("==")
    if normalise(dist) != op.dist or (eq and version.strip() != op.version):
        raise SpecError(f"operation {op.name!r} is from {op.origin}; the spec asks for {pin}")
