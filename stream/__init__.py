"""imgstream: streaming, micro-batching image processing on Kafka.

Importing this package has no side effects: no server, no environment, no
logging set-up. The public surface is re-exported here.
"""

from imgstream.batching import Batch, MicroBatcher
from imgstream.errors import (
    BrokerError,
    ConfigError,
    DeliveryError,
    ImageError,
    ImgstreamError,
    SpecError,
)
from imgstream.offsets import OffsetTracker
from imgstream.ops.decorator import Arg, op
from imgstream.records import BatchSummary, Failure, ImageRef, Message, Result, TopicPartition

__version__ = "0.1.0"

__all__ = [
    "Arg",
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
    "op",
]
