"""ONNX Runtime for the model operations: import, providers, model bytes, sessions.

* :func:`onnxruntime` imports ONNX Runtime when a model is first loaded, never
  at ``import imgstream`` (its import costs ~0.2 s and a few hundred MB of
  address space); a missing install is a one-line :class:`ConfigError` (exit
  2) that names the extra to install.
* :func:`choose_providers`: ``CUDAExecutionProvider`` first when the installed
  build has it (``onnxruntime-gpu``), then the CPU. A session created with
  CUDA on a machine without a usable GPU falls back to the CPU by itself;
  :attr:`Loaded.providers` is what the session really uses (the record's
  lineage reports it), read back from ``session.get_providers()``.
* :func:`read_model`: a local path or an ``s3://`` URI (through the one
  object-store module, the standard AWS settings); nothing is ever fetched
  from the internet. A missing or unreadable file is a one-line ConfigError.
* :class:`SessionCache`: one ``InferenceSession`` per (model sha256,
  providers, threads) in a process. ``InferenceSession.run`` is thread-safe,
  so a worker's image threads share one session (and its weights) instead of
  loading the model once per thread. :func:`shared_sessions` is the process's
  cache, made on first use; tests and benchmarks pass their own.

Threads: ONNX Runtime's intra-op pool gets :func:`default_threads` (the CPUs
this process may run on), one inter-op thread, and no spinning, so a
session's idle threads do not burn the cores that decode and encode the next
batch: on the shared 2-core machine, with neighbours busy, spinning made the
recogniser 1.7-2x slower (``benchmarks/bench_infer.py``, its "spinning" table).
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from imgstream.errors import ConfigError, ImageError

#: What to install for the model operations (the extra in pyproject.toml).
INSTALL_HINT = "pip install 'imgstream[models]'"

#: The largest model file read from an object store (ONNX's protobuf limit).
MAX_MODEL_BYTES = 2 * 1024**3

#: Called after each ``session.run``: (what ran, e.g. "infer" or "ocr.rec",
#: images or text boxes in the call, seconds). The worker can pass one that
#: feeds a batch-size histogram; it must not raise.
BatchHook = Callable[[str, int, float], None]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def onnxruntime(op: str) -> Any:
    """The ``onnxruntime`` module; ConfigError naming the extra when it is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(f"{op} needs ONNX Runtime: {INSTALL_HINT}") from None
    return ort


def default_threads() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def choose_providers(available: Sequence[str], gpu: bool = True) -> list[str]:
    """CUDA then CPU when the build has CUDA (and ``gpu``), else the CPU alone."""
    if gpu and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


@dataclass(frozen=True)
class ModelSource:
    """A model to load: a local path, or the bytes read from an object store."""

    location: str
    sha256: str
    path: str | None = None
    data: bytes | None = None


def read_model(location: str, op: str, what: str = "model", store: Any = None) -> ModelSource:
    """Read a model (or a labels file) from a path or ``s3://``; ConfigError when it cannot.

    ``store`` is an :class:`~imgstream.io.objstore.ObjectStore` (one is made for
    ``s3://`` when None).
    """
    from imgstream.io.objstore import ObjectStore, is_s3, parse_s3

    if is_s3(location):
        try:
            client = store if store is not None else ObjectStore()
            data = client.get(parse_s3(location), MAX_MODEL_BYTES)
        except ImageError as exc:
            raise ConfigError(f"{op}: cannot read the {what} {location}: {exc.message}") from None
        return ModelSource(location, hashlib.sha256(data).hexdigest(), data=data)
    path = os.path.abspath(os.path.expanduser(location))
    if not os.path.isfile(path):
        raise ConfigError(f"{op}: {what} file not found: {location}")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ConfigError(f"{op}: cannot read the {what} {location}: {exc.strerror}") from None
    return ModelSource(location, digest.hexdigest(), path=path)


def read_text(location: str, op: str, what: str, store: Any = None) -> str:
    """A small UTF-8 text file (labels) from a path or ``s3://``; ConfigError when it cannot."""
    source = read_model(location, op, what, store)
    try:
        if source.data is not None:
            return source.data.decode("utf-8")
        assert source.path is not None
        with open(source.path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{op}: cannot read the {what} {location}: {exc}") from None


@dataclass(frozen=True)
class Loaded:
    """A session and what it runs on."""

    session: Any
    sha256: str
    #: The providers the session really uses (CUDA only when a GPU took it).
    providers: tuple[str, ...]
    threads: int


class SessionCache:
    """``InferenceSession`` objects by (model sha256, providers, threads), shared by threads.

    Ownership: ``_sessions`` is read and written under ``_lock`` by any thread
    that loads a model (at start-up); the sessions themselves are used
    concurrently (``run`` is thread-safe).
    """

    def __init__(self, spinning: bool = False) -> None:
        #: Let ONNX Runtime's idle pool threads spin (busy-wait) between tasks.
        self.spinning = spinning
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, tuple[str, ...], int], Loaded] = {}

    def load(
        self,
        source: ModelSource,
        op: str,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> Loaded:
        """The session for ``source`` (created on first use); ConfigError if it cannot load."""
        ort = onnxruntime(op)
        wanted = tuple(providers or choose_providers(ort.get_available_providers()))
        n = threads if threads is not None else default_threads()
        key = (source.sha256, wanted, n)
        with self._lock:
            loaded = self._sessions.get(key)
            if loaded is None:
                loaded = _create(ort, source, op, wanted, n, self.spinning)
                self._sessions[key] = loaded
            return loaded

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


def _create(
    ort: Any, source: ModelSource, op: str, providers: tuple[str, ...], n: int, spinning: bool
) -> Loaded:
    options = ort.SessionOptions()
    options.intra_op_num_threads = n
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no per-node placement warnings on stderr
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    model = source.path if source.path is not None else source.data
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ConfigError(
            f"{op}: cannot load the model {source.location}: {_first_line(str(exc))}"
        ) from None
    return Loaded(session, source.sha256, tuple(session.get_providers()), n)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "unknown error")[:300]


@functools.cache
def shared_sessions() -> SessionCache:
    """The process's session cache (made on first use, never at import)."""
    return SessionCache()
