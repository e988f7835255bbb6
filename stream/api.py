"""The Python API: one image, a folder, the list of operations; no Kafka.

The worker's own code does the work, so what these functions give equals
what ``imgstream run`` stores for the same image and spec:
:meth:`Pipeline.parse` validates a spec exactly as the worker does at
start-up (a :class:`~imgstream.errors.SpecError`, exit code 2, naming what
is wrong), :meth:`Pipeline.run` is the worker's per-image path
(:meth:`imgstream.ops.pipeline.Pipeline.run`), :meth:`Pipeline.run_many` its
micro-batch path, and :func:`process_folder` reads files with the worker's
decoder (:func:`imgstream.io.imaging.decode`), writes outputs with its encoder
to the worker's output paths, and keeps a source's state for stateful steps
as the worker does::

    >>> import numpy as np, imgstream
    >>> p = imgstream.Pipeline.parse("gray|blur:k=3")
    >>> p.apply(np.zeros((48, 64, 3), np.uint8)).shape
    (48, 64)

NumPy and OpenCV are imported when a pipeline is parsed, not when
:mod:`imgstream` is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imgstream.errors import ImageError

if TYPE_CHECKING:
    import numpy as np

    from imgstream.ops import pipeline as _pipeline
    from imgstream.ops.registry import Operation

__all__ = ["FileResult", "Pipeline", "operations", "process_folder", "read_image"]

#: Output formats :func:`process_folder` writes (``--format`` of the worker).
OUTPUT_FORMATS = ("png", "jpg", "webp")


def _registry(plugins: bool) -> Any:
    from imgstream.ops import build_registry

    return build_registry(None if plugins else ())


def operations(*, plugins: bool = True) -> list[Operation]:
    """Every operation, sorted by name: the built-ins and (``plugins=True``) the
    installed plugins' ones, as ``imgstream ops`` lists them.

    Each :class:`~imgstream.ops.Operation` has its ``name``, ``kind``
    (``image``, ``analysis`` or ``batch``), ``help`` and typed ``params``
    (:class:`~imgstream.ops.Param`: ``name``, ``type``, ``default``, ``choices``,
    ``min``, ``max``, ``help``).
    """
    return list(_registry(plugins))


class Pipeline:
    """A validated pipeline spec, ready to run on images (numpy arrays, BGR order).

    Make one with :meth:`parse`. It is immutable and may be shared by threads;
    a stateful step (``motion``, ``dedupe``) keeps its state in the ``state``
    mapping you pass to :meth:`run`, never in the pipeline.
    """

    __slots__ = ("_pipeline", "spec")

    def __init__(self, pipeline: _pipeline.Pipeline, spec: str) -> None:
        self._pipeline = pipeline
        #: The spec as given.
        self.spec = spec

    @classmethod
    def parse(cls, spec: str, *, plugins: bool = True) -> Pipeline:
        """Parse and validate ``spec`` (``"gray|clahe:clip=2.0|resize:w=640"``).

        ``plugins=False`` leaves the installed plugins' operations out. An
        unknown operation or parameter, or a bad value, raises
        :class:`~imgstream.errors.SpecError` (exit code 2 at the command line)
        naming it and listing what is valid.
        """
        from imgstream.ops.pipeline import parse_spec

        return cls(parse_spec(spec, _registry(plugins)), spec)

    @property
    def canonical(self) -> str:
        """The canonical spec: every parameter, sorted; what results record."""
        return self._pipeline.canonical

    @property
    def hash(self) -> str:
        """12 hex digits of the canonical spec's SHA-256: the output folder's name."""
        return self._pipeline.hash

    @property
    def steps(self) -> tuple[str, ...]:
        """Each step's canonical form, in order."""
        return tuple(step.canonical() for step in self._pipeline.steps)

    @property
    def stateful(self) -> bool:
        """Whether a step remembers each source's past (pass ``state`` to :meth:`run`)."""
        return self._pipeline.stateful

    def footprint(self) -> int | None:
        """Halo pixels a tile needs to equal the whole image (None: cannot be tiled)."""
        return self._pipeline.footprint()

    def run(
        self, image: np.ndarray, *, state: dict[str, dict[str, Any]] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Every step on one image: the output image and the analysis outputs by step name.

        ``state``: one source's state (start with ``{}`` and pass the same dict
        with each next frame of that source) for stateful steps; without it a
        stateful step sees a first frame. An operation that fails raises
        :class:`~imgstream.errors.ImageError` of type ``op_error`` naming the step.
        """
        return self._pipeline.run(image, None, state)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Every step on one image: the output image (see :meth:`run`)."""
        return self._pipeline.run(image)[0]

    def run_many(
        self, images: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, dict[str, Any]] | ImageError]:
        """The images of one micro-batch, as the worker runs them: each ``batch``
        step (``infer``, ``ocr``) is one call; one outcome per image, in order,
        an image's failure as its :class:`~imgstream.errors.ImageError`."""
        return self._pipeline.run_many(images)

    def __repr__(self) -> str:
        return f"Pipeline({self.canonical!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and other.canonical == self.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """A file decoded as the worker decodes it: 8-bit BGR, EXIF orientation applied.

    Raises :class:`~imgstream.errors.ImageError` (``unsupported_format``,
    ``too_large`` over ``max_pixels``, ``decode_error``).
    """
    from imgstream.config import DEFAULT_MAX_PIXELS
    from imgstream.io import imaging

    with open(path, "rb") as f:
        data = f.read()
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    return imaging.decode(data, limit).image


@dataclass(frozen=True)
class FileResult:
    """What :func:`process_folder` gives for one file."""

    #: The file's absolute path.
    path: str
    #: The ref id the producer gives the file (stem and a hash of path, size, mtime).
    id: str
    #: The file's source: its folder's name, as ``imgstream run`` gives it.
    source: str
    #: The output image (None when the file failed).
    image: np.ndarray | None = field(repr=False)
    #: Analysis outputs by step name, as a result record's ``outputs``.
    outputs: dict[str, Any]
    #: The failure (``decode_error``, ``op_error``, ...) or None.
    error: ImageError | None = None
    #: Where the output was written (with ``out``); None when not written.
    output_path: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the file was processed."""
        return self.error is None


def process_folder(
    folder: str | os.PathLike[str],
    pipeline: str | Pipeline,
    *,
    out: str | os.PathLike[str] | None = None,
    output_format: str = "png",
    batch_size: int = 16,
    max_pixels: int | None = None,
) -> Iterator[FileResult]:
    """Run ``pipeline`` over every file under ``folder`` (recursively, in sorted order).

    One :class:`FileResult` per file, in order, as each micro-batch of
    ``batch_size`` files finishes. Files are decoded by the worker's decoder,
    so a file that is not an image is a failure (``unsupported_format``), not
    a skip. With ``out``, outputs are written where ``imgstream run --out OUT``
    writes them (``{out}/{hash}/{source}/{id}.{format}``, same bytes). A
    stateful pipeline runs each source's files in order with that source's
    state, as the worker does. Nothing touches Kafka.
    """
    from imgstream.config import DEFAULT_MAX_PIXELS

    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    root = os.fspath(folder)
    if not os.path.isdir(root):
        raise NotADirectoryError(root)
    p = pipeline if isinstance(pipeline, Pipeline) else Pipeline.parse(pipeline)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    writer = _Writer(os.fspath(out), output_format, p.hash) if out is not None else None
    files = _files(root)
    states: dict[str, dict[str, dict[str, Any]]] = {}
    while True:
        chunk = [next(files, None) for _ in range(batch_size)]
        batch = [f for f in chunk if f is not None]
        if not batch:
            return
        yield from _batch(p, batch, limit, writer, states)


def _files(root: str) -> Iterator[tuple[str, str, str]]:
    """(path, id, source) of each file, in the producer's order and with its ids."""
    from imgstream.producers.files import expand_inputs

    for found in expand_inputs([root], 0):
        ref = found.ref
        yield ref.uri, ref.id, ref.source or "_"


def _batch(
    p: Pipeline,
    batch: Iterable[tuple[str, str, str]],
    max_pixels: int,
    writer: _Writer | None,
    states: dict[str, dict[str, dict[str, Any]]],
) -> Iterator[FileResult]:
    decoded: list[tuple[str, str, str, np.ndarray | ImageError]] = []
    for path, id_, source in batch:
        try:
            decoded.append((path, id_, source, read_image(path, max_pixels=max_pixels)))
        except ImageError as exc:
            decoded.append((path, id_, source, exc))
    good = [i for i, d in enumerate(decoded) if not isinstance(d[3], ImageError)]
    outcomes: dict[int, tuple[np.ndarray, dict[str, Any]] | ImageError] = {}
    if p.stateful:
        for i in good:
            _, _, source, img = decoded[i]
            assert not isinstance(img, ImageError)
            try:
                outcomes[i] = p.run(img, state=states.setdefault(source, {}))
            except ImageError as exc:
                outcomes[i] = exc
    else:
        images = [decoded[i][3] for i in good]
        ran = p.run_many(images)  # type: ignore[arg-type]  # the failures are filtered out
        outcomes.update(zip(good, ran, strict=True))
    for i, (path, id_, source, img) in enumerate(decoded):
        got = outcomes.get(i)
        if got is None or isinstance(got, ImageError):
            error = got if got is not None else img
            assert isinstance(error, ImageError)
            yield FileResult(path, id_, source, None, {}, error)
            continue
        image, outputs = got
        written = writer.write(image, source, id_, outputs) if writer is not None else None
        yield FileResult(path, id_, source, image, outputs, None, written)


class _Writer:
    """Encodes and writes outputs as the worker's processor does."""

    def __init__(self, out: str, fmt: str, pipeline_hash: str) -> None:
        from imgstream.io import imaging

        self.out, self.fmt, self.hash = out, fmt, pipeline_hash
        self.params = imaging.encode_params(fmt)

    def write(
        self, image: np.ndarray, source: str, id_: str, outputs: dict[str, Any]
    ) -> str | None:
        from imgstream.io import imaging
        from imgstream.io.storage import output_path, write_atomic

        # ``motion:action=gate`` and ``dedupe`` keep only some frames, as in the worker.
        if not all(d.get("kept", True) for d in outputs.values() if isinstance(d, dict)):
            return None
        path = output_path(self.out, self.hash, source, id_, self.fmt)
        write_atomic(path, imaging.encode(image, self.fmt, self.params))
        return path
