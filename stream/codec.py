"""Records <-> bytes: versioned JSON, one object per message.

Every record carries ``"v": 1`` and a ``"kind"``. Decoding a ref is strict
about what it needs (``id`` and ``uri`` as non-empty strings, typed optional
fields) and keeps fields it does not know. Invalid input raises
:class:`~imgstream.errors.ImageError` of type ``bad_message`` with a precise
reason; it never raises anything else.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from imgstream.errors import BAD_MESSAGE, ImageError
from imgstream.records import (
    SCHEMA_VERSION,
    BatchSummary,
    Failure,
    ImageRef,
    Lineage,
    Record,
    Result,
)

MAX_MESSAGE_BYTES = 1 << 20

_REF_FIELDS = {"v", "kind", "id", "uri", "ts", "source", "sha256", "version", "tile", "meta"}


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def ref_to_dict(ref: ImageRef) -> dict[str, Any]:
    """The JSON object of a ref (unknown fields kept)."""
    out: dict[str, Any] = dict(ref.extra)
    out.update({"v": SCHEMA_VERSION, "kind": "ref", "id": ref.id, "uri": ref.uri, "ts": ref.ts})
    for name in ("source", "sha256", "version"):
        value = getattr(ref, name)
        if value is not None:
            out[name] = value
    if ref.tile is not None:
        out["tile"] = dict(ref.tile)
    if ref.meta is not None:
        out["meta"] = dict(ref.meta)
    return out


def result_to_dict(r: Result) -> dict[str, Any]:
    """The JSON object of a result."""
    out: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "kind": "result",
        "id": r.id,
        "uri": r.uri,
        "source": r.source,
        "output_uri": r.output_uri,
        "pipeline": r.pipeline,
        "pipeline_hash": r.pipeline_hash,
        "width": r.width,
        "height": r.height,
        "channels": r.channels,
        "bytes_in": r.bytes_in,
        "outputs": dict(r.outputs),
        "timings": dict(r.timings),
        "batch_id": r.batch_id,
        "worker": r.worker,
        "ts": r.ts,
        "latency_ms": r.latency_ms,
        "lineage": {
            "topic": r.lineage.topic,
            "partition": r.lineage.partition,
            "offset": r.lineage.offset,
            "sha256": r.lineage.sha256,
            "versions": dict(r.lineage.versions),
        },
    }
    if r.tile is not None:
        out["tile"] = dict(r.tile)
    return out


def batch_to_dict(b: BatchSummary) -> dict[str, Any]:
    """The JSON object of a batch summary."""
    return {
        "v": SCHEMA_VERSION,
        "kind": "batch",
        "batch_id": b.batch_id,
        "worker": b.worker,
        "size": b.size,
        "ok": b.ok,
        "failed": b.failed,
        "pixels": b.pixels,
        "reason": b.reason,
        "wait_s": b.wait_s,
        "process_s": b.process_s,
        "partitions": list(b.partitions),
        "ts": b.ts,
    }


def failure_to_dict(f: Failure) -> dict[str, Any]:
    """The JSON object of a failure."""
    out: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "kind": "failure",
        "id": f.id,
        "uri": f.uri,
        "source": f.source,
        "error": {"type": f.error_type, "message": f.error_message},
        "topic": f.topic,
        "partition": f.partition,
        "offset": f.offset,
        "attempts": f.attempts,
        "batch_id": f.batch_id,
        "worker": f.worker,
        "ts": f.ts,
    }
    if f.raw_b64 is not None:
        out["raw"] = f.raw_b64
    if f.parent is not None:
        out["parent"] = f.parent
    return out


def to_dict(record: Record) -> dict[str, Any]:
    """The JSON object of any record."""
    if isinstance(record, ImageRef):
        return ref_to_dict(record)
    if isinstance(record, Result):
        return result_to_dict(record)
    if isinstance(record, BatchSummary):
        return batch_to_dict(record)
    if isinstance(record, Failure):
        return failure_to_dict(record)
    raise TypeError(f"not a record: {type(record).__name__}")


def encode(record: Record) -> bytes:
    """UTF-8 JSON bytes of a record."""
    return _dumps(to_dict(record))


def b64(raw: bytes | None) -> str:
    """Base64 text of raw message bytes ('' for a tombstone)."""
    return base64.b64encode(raw or b"").decode("ascii")


def _bad(reason: str) -> ImageError:
    return ImageError(BAD_MESSAGE, reason)


def _opt_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"field {name!r} must be a string, got {type(value).__name__}")
    return value


def _opt_obj(obj: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(f"field {name!r} must be an object, got {type(value).__name__}")
    return value


def parse_json_object(value: bytes | None) -> dict[str, Any]:
    """Parse message bytes as one JSON object, or raise ``bad_message``."""
    if value is None:
        raise _bad("empty message (tombstone)")
    if len(value) > MAX_MESSAGE_BYTES:
        raise _bad(f"message is {len(value)} bytes, over the {MAX_MESSAGE_BYTES} limit")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = (
            f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else "nested too deeply"
        )
        raise _bad(f"not valid JSON: {detail}") from None
    if not isinstance(obj, dict):
        raise _bad(f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise _bad(f"unsupported schema version {version!r} (this worker reads v{SCHEMA_VERSION})")
    return obj


def ref_from_dict(obj: Mapping[str, Any], default_ts: int) -> ImageRef:
    """Validate a JSON object as a ref; ``ts`` falls back to ``default_ts``."""
    kind = obj.get("kind", "ref")
    if kind != "ref":
        raise _bad(f"expected kind 'ref', got {kind!r}")
    for name in ("id", "uri"):
        if name not in obj:
            raise _bad(f"missing required field {name!r}")
        value = obj[name]
        if not isinstance(value, str):
            raise _bad(f"field {name!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise _bad(f"field {name!r} is empty")
        if "\x00" in value:
            raise _bad(f"field {name!r} contains a NUL character")
    ts = obj.get("ts", default_ts)
    if ts is None:
        ts = default_ts
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise _bad(f"field 'ts' must be a non-negative integer (epoch ms), got {ts!r}")
    return ImageRef(
        id=obj["id"],
        uri=obj["uri"],
        ts=ts,
        source=_opt_str(obj, "source"),
        sha256=_opt_str(obj, "sha256"),
        version=_opt_str(obj, "version"),
        tile=_opt_obj(obj, "tile"),
        meta=_opt_obj(obj, "meta"),
        extra={k: v for k, v in obj.items() if k not in _REF_FIELDS},
    )


def decode_ref(value: bytes | None, default_ts: int) -> ImageRef:
    """Decode a refs-topic message value; raise ``bad_message`` with the reason."""
    return ref_from_dict(parse_json_object(value), default_ts)


def _lineage(obj: Mapping[str, Any]) -> Lineage:
    return Lineage(
        topic=obj["topic"],
        partition=obj["partition"],
        offset=obj["offset"],
        sha256=obj.get("sha256"),
        versions=obj.get("versions", {}),
    )


def decode_record(value: bytes | None) -> Record:
    """Decode any record written by imgstream (results, batch, dlq topics).

    Raises :class:`~imgstream.errors.ImageError` (``bad_message``) if the bytes
    are not a record of a known kind.
    """
    obj = parse_json_object(value)
    kind = obj.get("kind")
    try:
        if kind == "ref":
            return ref_from_dict(obj, 0)
        if kind == "result":
            return Result(
                id=obj["id"],
                uri=obj["uri"],
                output_uri=obj.get("output_uri"),
                pipeline=obj["pipeline"],
                pipeline_hash=obj["pipeline_hash"],
                width=obj["width"],
                height=obj["height"],
                channels=obj["channels"],
                outputs=obj.get("outputs", {}),
                timings=obj.get("timings", {}),
                batch_id=obj["batch_id"],
                worker=obj["worker"],
                source=obj.get("source"),
                ts=obj["ts"],
                latency_ms=obj["latency_ms"],
                lineage=_lineage(obj["lineage"]),
                bytes_in=obj.get("bytes_in", 0),
                tile=obj.get("tile"),
            )
        if kind == "batch":
            return BatchSummary(
                batch_id=obj["batch_id"],
                worker=obj["worker"],
                size=obj["size"],
                ok=obj["ok"],
                failed=obj["failed"],
                pixels=obj["pixels"],
                reason=obj["reason"],
                wait_s=obj["wait_s"],
                process_s=obj["process_s"],
                partitions=tuple(obj.get("partitions", ())),
                ts=obj["ts"],
            )
        if kind == "failure":
            error = obj["error"]
            return Failure(
                error_type=error["type"],
                error_message=error["message"],
                topic=obj["topic"],
                partition=obj["partition"],
                offset=obj["offset"],
                worker=obj["worker"],
                ts=obj["ts"],
                id=obj.get("id"),
                uri=obj.get("uri"),
                source=obj.get("source"),
                raw_b64=obj.get("raw"),
                attempts=obj.get("attempts", 1),
                batch_id=obj.get("batch_id"),
                parent=obj.get("parent"),
            )
    except (KeyError, TypeError) as exc:
        raise _bad(f"{kind} record is missing or has a malformed field: {exc}") from None
    raise _bad(f"unknown record kind {kind!r}")
