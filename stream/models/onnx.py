"""``infer``: a user's ONNX model on a micro-batch's images, in one ``session.run``.

Parameters (:class:`InferSpec`, from the spec's ``key=value`` pairs)::

    infer:model=PATH|s3://bucket/key,size=S (or w=W,h=H),scale=1.0,mean=0,std=1,
          rgb=true,labels=FILE|s3://...,top=5,batch=0

``mean`` and ``std`` are one number for every channel, or one per channel
joined by ``/`` (the spec already uses ``,`` between parameters)::

    infer:model=resnet.onnx,size=224,scale=0.00392156862745098,
          mean=0.485/0.456/0.406,std=0.229/0.224/0.225

Per-channel values are in the order of the model's channels: R, G, B when
``rgb=true`` (the default), B, G, R when ``rgb=false``.

Preprocessing (:meth:`Model.preprocess`), in this order:

1. pixels to 8 bits under the ``gray`` operation's policy (16-bit ``>> 8``,
   float in [0, 1] times 255);
2. ``cv2.resize`` to the model's input width and height with
   ``INTER_LINEAR``, no letterbox (the aspect ratio is not kept);
3. channels: a 3-channel model gets BGR (gray expanded, alpha dropped),
   turned to RGB when ``rgb``; a 1-channel model gets BT.601 gray;
4. ``(x * scale - mean) / std`` in float32, laid out CHW; the images of a
   call are stacked NCHW.

Running (:meth:`Model.run`): when the model's batch axis is dynamic, every
image of the call goes through **one** ``session.run`` (``batch=N`` caps a run
at N images, for models that measure faster in smaller batches: on a busy CPU
a large fully-convolutional model can); a fixed batch of 1
runs image by image; a fixed batch of B > 1 runs in chunks of B (the last
padded with copies of its last image, their outputs dropped). A model whose
outputs do not carry the batch on axis 0 is run image by image from then on.

Outputs, per image, by output name (:func:`pack`): a tensor of at most
:data:`MAX_VALUES` values is a flat list (float32 as their shortest decimal,
NaN and infinities as ``null``); a larger one is ``{"shape", "dtype",
"sha256"}`` of its C-order bytes, not the values. With ``labels`` (one label a
line), each 2-D output of that many classes becomes the ``top`` ``{"label",
"score"}`` pairs by descending score (the output's own values: no softmax).

:func:`shared_model` is the process's :class:`Model` for a spec (made once,
at start-up, and shared by the worker's threads): what the ``infer`` batch
operation calls, from its parameter check (so a bad model exits 2 before the
first message) and for each micro-batch.

Start-up errors (ConfigError, exit 2, one line, naming the parameter): a model
that does not load or cannot be read, more than one input, an input that is
not rank-4 NCHW float with 1 or 3 channels, dynamic height/width without
``size``, a ``size`` that differs from a fixed input, mean/std that do not
match the channels, labels that fit no output.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from imgstream._cv import cv2
from imgstream.errors import ConfigError
from imgstream.models.inferspec import (
    OP,
    InferSpec,
    InputInfo,
    check_input,
    fixed_dim,
    parse_channels,
)
from imgstream.models.runtime import (
    BatchHook,
    Loaded,
    SessionCache,
    onnxruntime,
    read_model,
    read_text,
    shared_sessions,
)
from imgstream.ops.builtin.color import as_gray, to_uint8

Image = np.ndarray[Any, Any]

#: Output tensors up to this many values are stored as values, larger ones as a hash.
MAX_VALUES = 4096

__all__ = [
    "MAX_VALUES",
    "InferSpec",
    "InputInfo",
    "Model",
    "check_input",
    "pack",
    "parse_channels",
    "shared_model",
]


def _parse_labels(text: str) -> list[str]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def pack(array: np.ndarray[Any, Any]) -> Any:
    """One image's output tensor as stored in the record (see the module docstring)."""
    if array.size > MAX_VALUES:
        data = np.ascontiguousarray(array)
        return {
            "shape": list(data.shape),
            "dtype": str(data.dtype),
            "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
        }
    flat = array.ravel()
    if flat.dtype.kind == "f":
        finite = np.isfinite(flat)
        if flat.dtype == np.float64:
            return [float(v) if ok else None for v, ok in zip(flat.tolist(), finite, strict=True)]
        # a float32's shortest decimal: what the model computed, without float64 noise
        return [float(str(v)) if ok else None for v, ok in zip(flat, finite, strict=True)]
    return flat.tolist()


class Model:
    """A loaded ``infer`` model: checked at start-up, shared by threads, run per micro-batch.

    ``store`` reads ``s3://`` models and labels; ``cache`` holds the session
    (the process's :func:`~imgstream.models.runtime.shared_sessions` by
    default); ``providers`` and ``threads`` override the defaults;
    ``on_batch`` is called after each ``session.run`` with ("infer", images,
    seconds).

    Ownership: everything is set in ``__init__`` and read-only after, but
    ``calls`` and ``images`` (counters of ``session.run`` calls and the images
    they carried), updated under ``_lock`` by any thread that runs the model,
    and ``_batch_on_axis0``, which only ever turns False.
    """

    def __init__(
        self,
        spec: InferSpec,
        *,
        store: Any = None,
        cache: SessionCache | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        on_batch: BatchHook | None = None,
    ) -> None:
        self.spec = spec
        source = read_model(spec.model, OP, "model", store)
        self.loaded: Loaded = (cache if cache is not None else shared_sessions()).load(
            source, OP, providers, threads
        )
        self.session = self.loaded.session
        self.input = check_input(self.session, spec)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.on_batch = on_batch
        self.labels: list[str] | None = None
        self._label_outputs: set[str] = set()
        if spec.labels is not None:
            self.labels = _parse_labels(read_text(spec.labels, OP, "labels", store))
            self._label_outputs = self._check_labels(self.labels)
        shape = (self.input.channels, 1, 1)
        self._mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
        self._std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
        self._mean = np.broadcast_to(self._mean, shape)
        self._std = np.broadcast_to(self._std, shape)
        self._lock = threading.Lock()
        self._batch_on_axis0 = True
        self.calls = 0
        self.images = 0

    def _check_labels(self, labels: list[str]) -> set[str]:
        if not labels:
            raise ConfigError(f"{OP}: the labels file {self.spec.labels} is empty")
        fits = set()
        shapes = []
        for out in self.session.get_outputs():
            shapes.append(f"{out.name} {list(out.shape)}")
            if len(out.shape) == 2 and fixed_dim(out.shape[1]) in (None, len(labels)):
                fits.add(out.name)
        if not fits:
            raise ConfigError(
                f"{OP}: labels= has {len(labels)} labels but no 2-D output has that many "
                f"classes (outputs: {'; '.join(shapes)})"
            )
        return fits

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the session really uses."""
        return self.loaded.providers

    def lineage(self) -> dict[str, Any]:
        """What a result record's lineage says about the model and where it ran."""
        return {
            "model_sha256": self.loaded.sha256,
            "onnxruntime": onnxruntime(OP).__version__,
            "providers": list(self.loaded.providers),
        }

    def preprocess(self, image: Image) -> np.ndarray[Any, Any]:
        """One image as the model's CHW float32 input (see the module docstring)."""
        out = np.empty((self.input.channels, self.input.height, self.input.width), np.float32)
        self._preprocess_into(image, out)
        return out

    def _preprocess_into(self, image: Image, out: np.ndarray[Any, Any]) -> None:
        img = to_uint8(image)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        size = (self.input.width, self.input.height)
        if img.shape[1::-1] != size:
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        if self.input.channels == 1:
            chw = as_gray(img)[None, :, :]
        else:
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB if self.spec.rgb else cv2.COLOR_GRAY2BGR)
            elif img.shape[2] == 4:
                img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if self.spec.rgb else cv2.COLOR_BGRA2BGR)
            elif self.spec.rgb:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            chw = img.transpose(2, 0, 1)
        np.multiply(chw, np.float32(self.spec.scale), out=out, dtype=np.float32)
        out -= self._mean
        out /= self._std

    def run(self, images: Sequence[Image]) -> list[dict[str, Any]]:
        """Each image's outputs by output name, in order (see the module docstring)."""
        if not images:
            return []
        return [self.pack_outputs(arrays) for arrays in self.forward(self.prepare(images))]

    def prepare(self, images: Sequence[Image]) -> np.ndarray[Any, Any]:
        """The images preprocessed into one NCHW float32 batch."""
        shape = (len(images), self.input.channels, self.input.height, self.input.width)
        batch = np.empty(shape, dtype=np.float32)
        for i, image in enumerate(images):
            self._preprocess_into(image, batch[i])
        return batch

    def forward(self, batch: np.ndarray[Any, Any]) -> list[list[np.ndarray[Any, Any]]]:
        """The raw outputs, one list of arrays (the output order) per image of ``batch``."""
        n = len(batch)
        fixed = self.input.batch
        if fixed is None and self._batch_on_axis0:
            most = self.spec.batch or n
            results: list[list[np.ndarray[Any, Any]]] = []
            for start in range(0, n, most):
                got = self._run_chunk(batch[start : start + most], min(most, n - start))
                if got is None:
                    with self._lock:
                        self._batch_on_axis0 = False
                    break
                results.extend(got)
            else:
                return results
        step = fixed if fixed is not None else 1
        results = []
        for start in range(0, n, step):
            chunk = batch[start : start + step]
            real = len(chunk)
            if real < step:  # a fixed batch: pad with copies of the last image
                pad = np.repeat(chunk[-1:], step - real, axis=0)
                chunk = np.concatenate([chunk, pad])
            got = self._run_chunk(chunk, step)
            if got is None:
                raise RuntimeError(f"the model's outputs do not hold a batch of {step} on axis 0")
            results.extend(got[:real])
        return results

    def _run_chunk(
        self, chunk: np.ndarray[Any, Any], n: int
    ) -> list[list[np.ndarray[Any, Any]]] | None:
        feed = chunk if self.input.dtype is np.float32 else chunk.astype(self.input.dtype)
        started = time.perf_counter()
        outputs = self.session.run(None, {self.input.name: feed})
        seconds = time.perf_counter() - started
        with self._lock:
            self.calls += 1
            self.images += n
        if self.on_batch is not None:
            self.on_batch(OP, n, seconds)
        arrays = [np.asarray(o) for o in outputs]
        if all(a.ndim >= 1 and a.shape[0] == n for a in arrays):
            return [[a[i] for a in arrays] for i in range(n)]
        if n == 1:
            return [arrays]
        return None

    def pack_outputs(self, arrays: list[np.ndarray[Any, Any]]) -> dict[str, Any]:
        """One image's raw outputs (from :meth:`forward`) as stored in the record."""
        out: dict[str, Any] = {}
        for name, array in zip(self.output_names, arrays, strict=True):
            if self.labels is not None and name in self._label_outputs and array.ndim == 1:
                out[name] = self._top(name, array)
            else:
                out[name] = pack(array)
        return out

    def _top(self, name: str, scores: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
        assert self.labels is not None
        if len(scores) != len(self.labels):
            raise ValueError(
                f"output {name!r} has {len(scores)} classes; the labels file has {len(self.labels)}"
            )
        order = np.argsort(-scores.astype(np.float64), kind="stable")[: self.spec.top]
        return [{"label": self.labels[i], "score": float(scores[i])} for i in order]


_shared_lock = threading.Lock()
_shared: dict[InferSpec, Model] = {}


def shared_model(spec: InferSpec) -> Model:
    """The process's model for ``spec`` (loaded on first use, under a lock; ConfigError)."""
    with _shared_lock:
        model = _shared.get(spec)
        if model is None:
            model = _shared[spec] = Model(spec)
        return model
