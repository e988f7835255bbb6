"""imgstream: streaming, micro-batching image processing on Kafka.

Importing this package has no side effects: no server, no environment, no
logging set-up. The public surface is re-exported here; the Python API for
one image and for a folder (:class:`Pipeline`, :func:`process_folder`,
:func:`operations`, :func:`read_image`, from :mod:`imgstream.api`) is
imported on first use, so ``import imgstream`` loads neither NumPy nor OpenCV.

The version is written here and nowhere else (``pyproject.toml`` reads it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imgstream.commits.offsets import OffsetTracker
from imgstream.errors import (
    BrokerError,
    ConfigError,
    DeliveryError,
    ImageError,
    ImgstreamError,
    SpecError,
)
from imgstream.ops.decorator import Arg, op
from imgstream.schema.records import (
    BatchSummary,
    Failure,
    ImageRef,
    Message,
    Result,
    TopicPartition,
)
from imgstream.worker.batching import Batch, MicroBatcher

if TYPE_CHECKING:
    from imgstream.api import FileResult, Pipeline, operations, process_folder, read_image

__version__ = "0.1.0"

__all__ = [
    "Arg",
    "Batch",
    "BatchSummary",
    "BrokerError",
    "ConfigError",
    "DeliveryError",
    "Failure",
    "FileResult",
    "ImageError",
    "ImageRef",
    "ImgstreamError",
    "Message",
    "MicroBatcher",
    "OffsetTracker",
    "Pipeline",
    "Result",
    "SpecError",
    "TopicPartition",
    "__version__",
    "op",
    "operations",
    "process_folder",
    "read_image",
]

_LAZY = frozenset({"FileResult", "Pipeline", "operations", "process_folder", "read_image"})


def __getattr__(name: str) -> Any:
    """The Python API's names, imported on first use (PEP 562)."""
    if name in _LAZY:
        from imgstream import api

        return getattr(api, name)
    raise AttributeError(f"module 'imgstream' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
