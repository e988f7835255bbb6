"""Model operations: ``infer`` (a user's ONNX model) and ``ocr`` (PP-OCR), per micro-batch.

Both are ``batch`` operations over the cores in :mod:`imgstream.models`: the
worker hands them the images of one micro-batch and they run the model on
all of them together (``infer``: one ``session.run``; ``ocr``: the text boxes
of every image recognised together). The model is loaded by the parameter
check, when the spec is parsed at start-up, so a model that is missing, does
not load or does not fit the parameters, or a missing ONNX Runtime, stops
the process with one line (exit 2) before the first message; the worker's
threads then share that one model (``shared_model`` / ``shared_reader``).

Every result of a pipeline with a model step records, in
``lineage.versions``, ONNX Runtime's version (``onnxruntime``), the
execution providers the sessions really use (``onnxruntime.providers``,
e.g. ``CPUExecutionProvider``, or ``CUDAExecutionProvider,CPUExecutionProvider``
when ``onnxruntime-gpu`` found a GPU) and the sha256 of each model file
(``infer.model_sha256``; ``ocr.det_sha256`` and ``ocr.rec_sha256``).

Batch sizes are visible: each ``session.run`` is a DEBUG line of the logger
``imgstream.ops.builtin.models`` (what ran, how many images or text boxes, how long),
and ``infer`` stores in each image's outputs ``batch``, the images of the
``session.run`` that computed it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from imgstream.errors import ConfigError, SpecError
from imgstream.models.ocr import OcrSettings, TextReader, shared_reader
from imgstream.models.onnx import InferSpec, Model, shared_model
from imgstream.ops.decorator import Arg, op
from imgstream.ops.registry import Image

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The calling thread's list of ``session.run`` sizes while an ``infer`` call counts them.
_local = threading.local()


def _on_batch(what: str, n: int, seconds: float) -> None:
    """Each ``session.run`` of a model operation: a DEBUG line, and its size to the
    calling thread's count (the hook runs in the thread that ran the model)."""
    unit = "text boxes" if what == "ocr.rec" else "images"
    log.debug("%s: one session.run of %d %s in %.1f ms", what, n, unit, seconds * 1000)
    sizes = getattr(_local, "sizes", None)
    if sizes is not None:
        sizes.append(n)


def run_sizes(sizes: Sequence[int], n: int) -> list[int | None]:
    """The images of the ``session.run`` that computed each of ``n`` images, given the
    sizes of the call's runs in order (None where no run was counted).

    Runs take consecutive chunks of the images; the last may be padded (a fixed
    batch), and once in a model's life a first run whose outputs had no batch
    axis is redone image by image. So runs are matched from the end.
    """
    out: list[int | None] = [None] * n
    end = n
    for size in reversed(sizes):
        if end == 0:
            break
        start = max(0, end - size)
        out[start:end] = [size] * (end - start)
        end = start
    return out


def _loaded(load: Callable[[], T]) -> T:
    """``load()``, its ConfigError as the SpecError of a parameter (exit 2, one line)."""
    try:
        return load()
    except SpecError:
        raise
    except ConfigError as exc:
        raise SpecError(str(exc)) from None


def infer_spec(params: Mapping[str, Any]) -> InferSpec:
    """``infer``'s parameters as an :class:`InferSpec`; SpecError when they do not hold."""
    if params.get("model") is None:
        raise SpecError("operation 'infer': parameter 'model' is required: a path or s3:// URI")
    return _loaded(lambda: InferSpec.from_params(params))


def infer_model(params: Mapping[str, Any]) -> Model:
    """The process's model for ``infer``'s parameters (loaded and checked on first use)."""
    model = _loaded(lambda: shared_model(infer_spec(params)))
    if model.on_batch is None:
        model.on_batch = _on_batch
    return model


def text_reader(limit_side: int = 960, min_score: float = 0.5) -> TextReader:
    """The process's PP-OCR reader for these settings (loaded on first use)."""
    settings = OcrSettings(limit_side=limit_side, min_score=min_score)
    reader = _loaded(lambda: shared_reader(settings))
    if reader.on_batch is None:
        reader.on_batch = _on_batch
    return reader


def runtime_versions(lineage: Mapping[str, Any], op: str, hashes: Sequence[str]) -> dict[str, str]:
    """A model core's ``lineage()`` as ``lineage.versions`` entries (texts)."""
    out = {
        "onnxruntime": str(lineage["onnxruntime"]),
        "onnxruntime.providers": ",".join(lineage["providers"]),
    }
    out.update({f"{op}.{key}": str(lineage[key]) for key in hashes})
    return out


def _check_infer(params: Mapping[str, Any]) -> None:
    infer_model(params)


def _infer_lineage(params: Mapping[str, Any]) -> dict[str, str]:
    return runtime_versions(infer_model(params).lineage(), "infer", ("model_sha256",))


ModelPath = Annotated[str | None, Arg("the ONNX model: a path or s3://bucket/key (required)")]
Side = Annotated[int | None, Arg("model input side in pixels (else the model's)", min=1, max=16384)]
Channels = Annotated[str, Arg("one number, or one per channel joined by '/'")]


@op(
    "infer",
    equals="``onnxruntime.InferenceSession(model).run`` once per micro-batch",
    kind="batch",
    help="a user's ONNX model on the micro-batch, in one session.run",
    check=_check_infer,
    lineage=_infer_lineage,
)
def infer(
    images: list[Image],
    *,
    model: ModelPath = None,
    size: Side = None,
    w: Side = None,
    h: Side = None,
    scale: Annotated[float, Arg("pixels (0-255) times this, before mean and std")] = 1.0,
    mean: Channels = "0",
    std: Channels = "1",
    rgb: Annotated[bool, Arg("feed R, G, B (false: B, G, R as decoded)")] = True,
    labels: Annotated[str | None, Arg("labels file, one a line: top scores by label")] = None,
    top: Annotated[int, Arg("labels kept per output", min=1)] = 5,
    batch: Annotated[int, Arg("most images in one session.run (0: all)", min=0)] = 0,
) -> list[dict[str, Any]]:
    """Run an ONNX model (ONNX Runtime) on the micro-batch's images in one session.run.

    Each image is made 8-bit, resized to the model's input (``size=`` or
    ``w=``/``h=`` for a dynamic one; ``cv2.resize`` INTER_LINEAR, aspect not
    kept), turned to RGB (``rgb=false``: BGR; a 1-channel model gets BT.601
    gray), scaled to ``(x * scale - mean) / std`` in float32 and laid out
    NCHW. ``mean``/``std``: one number, or one per channel joined by '/',
    e.g. ``mean=0.485/0.456/0.406``.

    ``outputs.infer`` holds each output tensor by name: its values as a flat
    list (up to 4096 of them), else ``{shape, dtype, sha256}``; with
    ``labels=``, a 2-D output of that many classes becomes the ``top``
    ``{label, score}`` pairs. ``batch`` is the number of images in the
    session.run that computed the image. The model file's sha256, ONNX
    Runtime's version and the providers used (CUDA with onnxruntime-gpu and a
    GPU, else the CPU) go to every result's lineage. A model that is missing,
    does not load or does not fit stops the start-up (exit 2).
    """
    params = {
        "model": model,
        "size": size,
        "w": w,
        "h": h,
        "scale": scale,
        "mean": mean,
        "std": std,
        "rgb": rgb,
        "labels": labels,
        "top": top,
        "batch": batch,
    }
    loaded = infer_model(params)
    sizes: list[int] = []
    _local.sizes = sizes
    try:
        outputs = loaded.run(images)
    finally:
        _local.sizes = None
    for out, n in zip(outputs, run_sizes(sizes, len(images)), strict=True):
        if n is not None:
            out.setdefault("batch", n)  # an output tensor named "batch" keeps its name
    return outputs


def _check_ocr(params: Mapping[str, Any]) -> None:
    text_reader(params["limit_side"], params["min_score"])


def _ocr_lineage(params: Mapping[str, Any]) -> dict[str, str]:
    reader = text_reader(params["limit_side"], params["min_score"])
    return runtime_versions(reader.lineage(), "ocr", ("det_sha256", "rec_sha256"))


@op(
    "ocr",
    equals=(
        "PP-OCR (text detection, angle classification, recognition) with the models of the "
        "``rapidocr`` wheel on ONNX Runtime"
    ),
    kind="batch",
    help="lines of text (PP-OCR's models in the rapidocr wheel)",
    check=_check_ocr,
    lineage=_ocr_lineage,
)
def ocr(
    images: list[Image],
    *,
    limit_side: Annotated[
        int, Arg("detector input: longer side at most (never upscaled)", min=32, max=8192)
    ] = 960,
    min_score: Annotated[float, Arg("drop lines scoring under this", min=0.0, max=1.0)] = 0.5,
) -> list[dict[str, Any]]:
    """Read the lines of text in each image (PP-OCRv6 detection and recognition).

    ``outputs.ocr.lines``: ``{text, score, box: [x, y, w, h], points}`` in
    reading order (``points``: the four corners, clockwise from the
    top-left). Detection runs per image, at most ``limit_side`` pixels on the
    longer side; every text box of the micro-batch is recognised together.
    Nothing is downloaded: the models ship in the rapidocr wheel (a missing
    install stops the start-up, exit 2).
    """
    return text_reader(limit_side, min_score).read_text(images)
