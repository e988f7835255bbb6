"""``ocr``: read text with the PP-OCR models that ship inside the rapidocr wheel.

:class:`TextReader` loads PP-OCRv6's small detection and recognition models
(``PP-OCRv6_det_small.onnx``, ``PP-OCRv6_rec_small.onnx``, Apache-2.0) from
the installed ``rapidocr`` package's ``models`` folder (found without
importing rapidocr) onto ONNX Runtime, through the process's shared session
cache. Nothing is downloaded: a missing package or model file is a one-line
:class:`~imgstream.errors.ConfigError` (exit 2) at start-up. The
recogniser's character set is read from the model's own metadata.

* :meth:`TextReader.read_text` ``(images) -> [{"lines": [...]}, ...]``: each
  line is ``{"text", "score", "box": [x, y, w, h], "points": [[x, y] x 4]}``
  (points clockwise from the top-left; the box bounds them), in reading
  order, lines scoring under ``min_score`` or empty dropped.
* :meth:`TextReader.read_in_boxes` ``(images, boxes_per_image) ->
  [[{"text", "score"}, ...], ...]``: the text inside given ``[x, y, w, h]``
  boxes (``plates:read=true``), each box read as one line, nothing dropped.

:func:`shared_reader` is the process's reader for a set of
:class:`OcrSettings` (made once, at start-up, shared by the worker's threads):
what the ``ocr`` and ``plates:read=true`` batch operations call.

Batching, per call (one call per micro-batch): detection runs once per image,
or once for up to ``det_batch`` images of the same input size (a camera's
frames); then **every** text box of every image of the call is recognised
together, sorted by width/height ratio and cut into batches of
``rec_batch`` (:func:`~imgstream.models.textrec.plan_batches`), as PaddleOCR
does. The angle classifier that rapidocr also ships is not used: text is
read as it stands (rotated 90° only when a box is much taller than wide).

Speed (``benchmarks/bench_infer.py``): about 0.2 CPU-seconds for a 640x480
scene photo, two thirds of it in the detector. The detector sees the image
scaled down so its longer side is at most ``limit_side`` (960 by default: a
640x480 photo as it is, a 1080p frame at 960x544; never upscaled); the
recogniser's input is at least ``min_width`` wide. Same-size images measured
slower through the detector together than one by one on the CPU, hence
``det_batch=1``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imgstream._cv import cv2
from imgstream.errors import ConfigError
from imgstream.models.runtime import (
    INSTALL_HINT,
    BatchHook,
    Loaded,
    SessionCache,
    onnxruntime,
    read_model,
    shared_sessions,
)
from imgstream.models.textdet import (
    DbParams,
    aspect,
    bounding_box,
    crop_quad,
    db_boxes,
    det_input,
    det_size,
    reading_order,
)
from imgstream.models.textrec import CtcDecoder, plan_batches, rec_input
from imgstream.ops.builtin.color import to_uint8

Image = np.ndarray[Any, Any]

OP = "ocr"
DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"

#: The stages :attr:`TextReader.seconds` accounts.
STAGES = ("det.pre", "det.run", "det.post", "rec.pre", "rec.run", "rec.post")


@dataclass(frozen=True)
class OcrSettings:
    """How ``ocr`` detects and recognises (the defaults are the measured ones)."""

    #: The detector's input: longer side at most this many pixels (never upscaled).
    limit_side: int = 960
    #: Lines whose recognition score is under this are dropped (rapidocr's text_score).
    min_score: float = 0.5
    #: Images of one input size run through the detector together, this many at most.
    det_batch: int = 1
    #: Text boxes recognised per ``session.run`` (sorted by width/height ratio). PaddleOCR's 6:
    #: bigger batches pad more (18% of the columns at 16 on scene photos) for no gain on the CPU.
    rec_batch: int = 6
    #: The recogniser's narrowest input (PaddleOCR pads every batch to 320).
    min_width: int = 160
    db: DbParams = field(default_factory=DbParams)


def model_dir() -> str:
    """The ``models`` folder of the installed rapidocr package (ConfigError when absent)."""
    try:
        spec = importlib.util.find_spec("rapidocr")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"{OP} needs rapidocr (its PP-OCR models) and ONNX Runtime: {INSTALL_HINT}"
        )
    return os.path.join(next(iter(spec.submodule_search_locations)), "models")


def _bgr(image: Image) -> Image:
    img = to_uint8(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


class TextReader:
    """PP-OCR detection and recognition on ONNX Runtime, batched per call.

    ``models`` is the folder holding the two model files (rapidocr's by
    default); ``cache``, ``providers`` and ``threads`` as for
    :class:`~imgstream.models.onnx.Model`; ``on_batch`` is called after each
    ``session.run`` with ("ocr.det" or "ocr.rec", images or boxes, seconds).

    Ownership: set in ``__init__`` and read-only after, but ``seconds`` (time
    per stage, :data:`STAGES`) and ``calls`` (``session.run`` calls per
    model), added to under ``_lock`` by any thread that reads text.
    """

    def __init__(
        self,
        settings: OcrSettings | None = None,
        *,
        models: str | None = None,
        cache: SessionCache | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        on_batch: BatchHook | None = None,
    ) -> None:
        self.settings = settings if settings is not None else OcrSettings()
        folder = models if models is not None else model_dir()
        onnxruntime(OP)
        sessions = cache if cache is not None else shared_sessions()
        loaded = []
        for name, what in ((DET_MODEL, "detection model"), (REC_MODEL, "recognition model")):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                raise ConfigError(
                    f"{OP}: the {what} is missing: {path} (it ships in the rapidocr wheel: "
                    f"{INSTALL_HINT})"
                )
            loaded.append(sessions.load(read_model(path, OP, what), OP, providers, threads))
        self.det: Loaded = loaded[0]
        self.rec: Loaded = loaded[1]
        metadata = self.rec.session.get_modelmeta().custom_metadata_map
        if "character" not in metadata:
            raise ConfigError(f"{OP}: the recognition model {REC_MODEL} has no character list")
        self.decoder = CtcDecoder.from_metadata(metadata)
        classes = self.rec.session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.decoder):
            raise ConfigError(
                f"{OP}: the recognition model has {classes} classes but "
                f"{len(self.decoder)} characters"
            )
        self._det_input = self.det.session.get_inputs()[0].name
        self._rec_input = self.rec.session.get_inputs()[0].name
        self.on_batch = on_batch
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.calls: dict[str, int] = {"ocr.det": 0, "ocr.rec": 0}

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the sessions really use."""
        return self.det.providers

    def lineage(self) -> dict[str, Any]:
        """What a result record's lineage says about the models and where they ran."""
        return {
            "det_sha256": self.det.sha256,
            "rec_sha256": self.rec.sha256,
            "onnxruntime": onnxruntime(OP).__version__,
            "providers": list(self.det.providers),
        }

    def read_text(self, images: Sequence[Image]) -> list[dict[str, Any]]:
        """``{"lines": [...]}`` for each image (see the module docstring)."""
        bgrs = [_bgr(im) for im in images]
        found = self.detect(bgrs)
        started = time.perf_counter()
        crops, owners = [], []
        for i, boxes in enumerate(found):
            for j, (quad, _) in enumerate(boxes):
                crops.append(crop_quad(bgrs[i], quad))
                owners.append((i, j))
        self._add("rec.pre", time.perf_counter() - started)
        texts = self.recognize(crops)
        read: dict[tuple[int, int], tuple[str, float]] = dict(zip(owners, texts, strict=True))
        out = []
        for i, boxes in enumerate(found):
            lines = []
            for j in reading_order([quad for quad, _ in boxes]):
                text, score = read[(i, j)]
                if not text.strip() or score < self.settings.min_score:
                    continue
                quad = boxes[j][0]
                lines.append(
                    {
                        "text": text,
                        "score": score,
                        "box": bounding_box(quad),
                        "points": np.rint(quad).astype(int).tolist(),
                    }
                )
            out.append({"lines": lines})
        return out

    def read_in_boxes(
        self, images: Sequence[Image], boxes_per_image: Sequence[Sequence[Sequence[int]]]
    ) -> list[list[dict[str, Any]]]:
        """``{"text", "score"}`` for each ``[x, y, w, h]`` box of each image, in order."""
        if len(images) != len(boxes_per_image):
            raise ValueError(f"{len(images)} images but {len(boxes_per_image)} lists of boxes")
        started = time.perf_counter()
        crops, owners = [], []
        for i, (image, boxes) in enumerate(zip(images, boxes_per_image, strict=True)):
            bgr = _bgr(image)
            height, width = bgr.shape[:2]
            for j, (x, y, w, h) in enumerate(boxes):
                x0, y0 = max(0, int(x)), max(0, int(y))
                x1, y1 = min(width, int(x + w)), min(height, int(y + h))
                if x1 - x0 >= 2 and y1 - y0 >= 2:
                    crops.append(bgr[y0:y1, x0:x1])
                    owners.append((i, j))
        self._add("rec.pre", time.perf_counter() - started)
        texts = dict(zip(owners, self.recognize(crops), strict=True))
        return [
            [
                dict(zip(("text", "score"), texts.get((i, j), ("", 0.0)), strict=True))
                for j in range(len(boxes))
            ]
            for i, boxes in enumerate(boxes_per_image)
        ]

    def detect(self, bgrs: Sequence[Image]) -> list[list[tuple[np.ndarray[Any, Any], float]]]:
        """Text boxes (4x2 quads, image coordinates) and scores for each BGR image."""
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(bgrs):
            by_size[det_size(img.shape[0], img.shape[1], self.settings.limit_side)].append(i)
        found: list[list[tuple[np.ndarray[Any, Any], float]]] = [[] for _ in bgrs]
        step = max(1, self.settings.det_batch)
        for size, members in by_size.items():
            for start in range(0, len(members), step):
                chunk = members[start : start + step]
                began = time.perf_counter()
                batch = np.empty((len(chunk), 3, *size), dtype=np.float32)
                for k, i in enumerate(chunk):
                    det_input(bgrs[i], size, batch[k])
                self._add("det.pre", time.perf_counter() - began)
                (maps,) = self._run(self.det, "ocr.det", self._det_input, batch)[:1]
                began = time.perf_counter()
                for k, i in enumerate(chunk):
                    h, w = bgrs[i].shape[:2]
                    found[i] = db_boxes(maps[k, 0], h, w, self.settings.db)
                self._add("det.post", time.perf_counter() - began)
        return found

    def recognize(self, crops: Sequence[Image]) -> list[tuple[str, float]]:
        """(text, score) for each BGR crop, all of them in ratio-sorted batches."""
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        ratios = [aspect(c) for c in crops]
        for plan in plan_batches(ratios, self.settings.rec_batch, self.settings.min_width):
            began = time.perf_counter()
            batch = rec_input([crops[i] for i in plan.indices], plan.width)
            self._add("rec.pre", time.perf_counter() - began)
            (probs,) = self._run(self.rec, "ocr.rec", self._rec_input, batch)[:1]
            began = time.perf_counter()
            for i, decoded in zip(plan.indices, self.decoder.decode(probs), strict=True):
                results[i] = decoded
            self._add("rec.post", time.perf_counter() - began)
        return results

    def _run(self, loaded: Loaded, what: str, name: str, batch: np.ndarray[Any, Any]) -> Any:
        began = time.perf_counter()
        outputs = loaded.session.run(None, {name: batch})
        seconds = time.perf_counter() - began
        with self._lock:
            self.seconds[what.replace("ocr.", "") + ".run"] += seconds
            self.calls[what] += 1
        if self.on_batch is not None:
            self.on_batch(what, len(batch), seconds)
        return outputs

    def _add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds


_shared_lock = threading.Lock()
_shared: dict[OcrSettings, TextReader] = {}


def shared_reader(settings: OcrSettings | None = None) -> TextReader:
    """The process's reader for ``settings`` (loaded on first use, under a lock; ConfigError)."""
    key = settings if settings is not None else OcrSettings()
    with _shared_lock:
        reader = _shared.get(key)
        if reader is None:
            reader = _shared[key] = TextReader(key)
        return reader
