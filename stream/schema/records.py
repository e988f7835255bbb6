"""The records imgstream moves: frozen dataclasses with explicit fields.

``Message`` is one consumed Kafka message as raw bytes, with its topic,
partition and offset on it. ``ImageRef`` is what producers write to the refs
topic; ``Result``, ``BatchSummary`` and ``Failure`` are what workers write to
the results and dead-letter topics. Encoding lives in :mod:`imgstream.schema.codec`,
decoding in :mod:`imgstream.schema.decoding`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

SCHEMA_VERSION = 1


class TopicPartition(NamedTuple):
    """A topic and a partition number."""

    topic: str
    partition: int


@dataclass(frozen=True)
class Message:
    """One consumed message, undecoded."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    @property
    def tp(self) -> TopicPartition:
        """The message's topic-partition."""
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True)
class ImageRef:
    """A reference to one image (never the bytes)."""

    id: str
    uri: str
    ts: int
    source: str | None = None
    sha256: str | None = None
    version: str | None = None
    tile: Mapping[str, Any] | None = None
    meta: Mapping[str, Any] | None = None
    #: Fields this version does not know; kept so they survive a round trip.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Lineage:
    """Where a result came from."""

    topic: str
    partition: int
    offset: int
    sha256: str | None
    versions: Mapping[str, str]
    #: The tile ids a fused result was stitched from (empty for any other result).
    tiles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    """One processed image."""

    id: str
    uri: str
    output_uri: str | None
    pipeline: str
    pipeline_hash: str
    width: int
    height: int
    channels: int
    outputs: Mapping[str, Any]
    timings: Mapping[str, float]
    batch_id: str
    worker: str
    source: str | None
    ts: int
    latency_ms: int
    lineage: Lineage
    bytes_in: int = 0
    #: The ref's tile field, for tiles of a larger image (width/height are the core's).
    tile: Mapping[str, Any] | None = None
    #: Fields this version does not know; kept so they survive a round trip.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchSummary:
    """One closed and processed micro-batch."""

    batch_id: str
    worker: str
    size: int
    ok: int
    failed: int
    pixels: int
    reason: str
    wait_s: float
    process_s: float
    partitions: tuple[int, ...]
    ts: int
    #: Fields this version does not know; kept so they survive a round trip.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """One message or image that could not be processed."""

    error_type: str
    error_message: str
    topic: str
    partition: int
    offset: int
    worker: str
    ts: int
    id: str | None = None
    uri: str | None = None
    source: str | None = None
    #: The raw message value, base64, when it could not be parsed as a ref.
    raw_b64: str | None = None
    attempts: int = 1
    batch_id: str | None = None
    #: The parent image when the ref was a tile of it.
    parent: str | None = None
    #: Size and sha256 of the whole raw message, when ``raw_b64`` holds only a prefix.
    raw_size: int | None = None
    raw_sha256: str | None = None
    #: Fields this version does not know; kept so they survive a round trip.
    extra: Mapping[str, Any] = field(default_factory=dict)


Record = ImageRef | Result | BatchSummary | Failure
