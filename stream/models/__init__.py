"""Models on ONNX Runtime: the cores of the ``infer`` and ``ocr`` operations.

A library the ``batch`` operations call with a micro-batch's images; it knows
nothing of specs, records or Kafka.

* :mod:`imgstream.models.runtime` — ONNX Runtime imported lazily (a missing
  install is one line, exit 2), execution providers (CUDA when
  ``onnxruntime-gpu`` finds a GPU, else CPU), model bytes from a path or
  ``s3://``, and :class:`~imgstream.models.runtime.SessionCache`: one
  ``InferenceSession`` per model and providers in a process, shared by its
  threads.
* :mod:`imgstream.models.inferspec` — ``infer``'s parameters
  (:class:`~imgstream.models.inferspec.InferSpec`) and the input check.
* :mod:`imgstream.models.onnx` — ``infer``: :class:`~imgstream.models.onnx.Model`
  (checks the input at start-up, preprocesses, one ``session.run`` per
  micro-batch, packs outputs) and ``shared_model(spec)``.
* :mod:`imgstream.models.textdet` / :mod:`imgstream.models.textrec` — PP-OCR's
  DB post-processing and CTC decoding (numpy, OpenCV, pyclipper).
* :mod:`imgstream.models.ocr` — ``ocr``: :class:`~imgstream.models.ocr.TextReader`
  (``read_text``, ``read_in_boxes``) on the PP-OCR models inside the rapidocr
  wheel, and ``shared_reader(settings)``.

Importing this package imports neither ONNX Runtime nor rapidocr.
"""

from __future__ import annotations

__all__: list[str] = []
