"""imgstream: streaming, micro-batching image processing on Kafka.

Importing this package has no side effects: no server, no environment, no
logging set-up. The public surface is re-exported here.
"""

from stream.batching import Batch, MicroBatcher
from stream.errors import (
    BrokerError,
    ConfigError,
    DeliveryError,
    ImageError,
    ImgstreamError,
    SpecError,
)
from stream.offsets import OffsetTracker
from stream.records import BatchSummary, Failure, ImageRef, Message, Result, TopicPartition

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BatchSummary",
    "BrokerError",
    "ConfigError",
    "DeliveryError",
    "Failure",
    "ImageError",
    "ImageRef",
    "ImgstreamError",
    "Message",
    "MicroBatcher",
    "OffsetTracker",
    "Result",
    "SpecError",
    "TopicPartition",
    "__version__",
]
