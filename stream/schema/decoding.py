"""Bytes -> records: strict decoding of refs and of result, failure and batch records.

Decoding a ref is strict about what it needs (``id`` and ``uri`` as non-empty
strings, typed optional fields) and keeps fields it does not know. Invalid
input raises :class:`~imgstream.errors.ImageError` of type ``bad_message``
with a precise reason; it never raises anything else. The limits it enforces
are defined beside the encoder, in :mod:`imgstream.schema.codec`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from imgstream.errors import BAD_MESSAGE, ImageError
from imgstream.schema.codec import (
    MAX_INT,
    MAX_MESSAGE_BYTES,
    MAX_REF_FIELD_CHARS,
    MAX_REF_OBJECT_BYTES,
    MAX_TS_MS,
    REF_FIELDS,
    dumps,
)
from imgstream.schema.records import (
    SCHEMA_VERSION,
    BatchSummary,
    Failure,
    ImageRef,
    Lineage,
    Record,
    Result,
)
from imgstream.tiling import tile_from_meta


def _bad(reason: str) -> ImageError:
    return ImageError(BAD_MESSAGE, reason)


def _opt_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"field {name!r} must be a string, got {type(value).__name__}")
    if len(value) > MAX_REF_FIELD_CHARS:
        raise _bad(f"field {name!r} is {len(value)} characters, over {MAX_REF_FIELD_CHARS}")
    return value


def _opt_obj(obj: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(f"field {name!r} must be an object, got {type(value).__name__}")
    size = len(dumps(value))
    if size > MAX_REF_OBJECT_BYTES:
        raise _bad(f"field {name!r} is {size} bytes, over {MAX_REF_OBJECT_BYTES}")
    return value


def valid_ts(ts: object) -> bool:
    """True for a sane epoch-ms timestamp: an int in ``[0, MAX_TS_MS)``."""
    return isinstance(ts, int) and not isinstance(ts, bool) and 0 <= ts < MAX_TS_MS


def _check_ints(obj: Mapping[str, Any], names: tuple[str, ...], kind: str) -> None:
    """Integer fields that reach SQLite must be ints that fit in 64 bits."""
    for name in names:
        value = obj.get(name)
        # ``type() is int`` also refuses bools; this runs for every record a collector reads.
        if value is None or (type(value) is int and -MAX_INT <= value <= MAX_INT):
            continue
        raise _bad(f"{kind} field {name!r} must be a 64-bit integer, got {str(value)[:40]}")
    ts = obj.get("ts")
    if ts is not None and not (type(ts) is int and 0 <= ts < MAX_TS_MS):
        raise _bad(f"{kind} field 'ts' must be epoch ms in [0, {MAX_TS_MS}), got {str(ts)[:40]}")


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
        if len(value) > MAX_REF_FIELD_CHARS:
            raise _bad(f"field {name!r} is {len(value)} characters, over {MAX_REF_FIELD_CHARS}")
    ts = obj.get("ts", default_ts)
    if ts is None:
        ts = default_ts
    if not valid_ts(ts):
        raise _bad(
            f"field 'ts' must be an integer epoch ms in [0, {MAX_TS_MS}) (before year 3000),"
            f" got {str(ts)[:40]}"
        )
    tile = _opt_obj(obj, "tile")
    if tile is not None:
        try:
            tile_from_meta(tile)
        except ValueError as exc:
            raise _bad(f"invalid 'tile' field: {exc}") from None
    return ImageRef(
        id=obj["id"],
        uri=obj["uri"],
        ts=ts,
        source=_opt_str(obj, "source"),
        sha256=_opt_str(obj, "sha256"),
        version=_opt_str(obj, "version"),
        tile=tile,
        meta=_opt_obj(obj, "meta"),
        extra={k: v for k, v in obj.items() if k not in REF_FIELDS},
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
        tiles=tuple(obj.get("tiles", ())),
    )


def decode_record(value: bytes | None) -> Record:
    """Decode any record written by imgstream (results, batch, dlq topics).

    Raises :class:`~imgstream.errors.ImageError` (``bad_message``) if the bytes
    are not a record of a known kind.
    """
    return record_from_dict(parse_json_object(value))


_RESULT_FIELDS = frozenset(
    [
        "v",
        "kind",
        "id",
        "uri",
        "source",
        "output_uri",
        "pipeline",
        "pipeline_hash",
        "width",
        "height",
        "channels",
        "bytes_in",
        "outputs",
        "timings",
        "batch_id",
        "worker",
        "ts",
        "latency_ms",
        "lineage",
        "tile",
    ]
)
_BATCH_FIELDS = frozenset(
    [
        "v",
        "kind",
        "batch_id",
        "worker",
        "size",
        "ok",
        "failed",
        "pixels",
        "reason",
        "wait_s",
        "process_s",
        "partitions",
        "ts",
    ]
)
_FAILURE_FIELDS = frozenset(
    [
        "v",
        "kind",
        "id",
        "uri",
        "source",
        "error",
        "topic",
        "partition",
        "offset",
        "attempts",
        "batch_id",
        "worker",
        "ts",
        "raw",
        "raw_size",
        "raw_sha256",
        "raw_truncated",
        "parent",
    ]
)


def _extra(obj: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """The fields of ``obj`` this version does not know."""
    if obj.keys() <= known:  # the usual case, checked in C
        return {}
    return {k: v for k, v in obj.items() if k not in known}


_INT_FIELDS = {
    "result": ("width", "height", "channels", "latency_ms", "bytes_in"),
    "batch": ("size", "ok", "failed", "pixels"),
    "failure": ("partition", "offset", "attempts", "raw_size"),
}


def record_from_dict(obj: Mapping[str, Any]) -> Record:
    """Validate a JSON object as a record of any kind (see :func:`decode_record`)."""
    kind = obj.get("kind")
    if kind in _INT_FIELDS:
        _check_ints(obj, _INT_FIELDS[str(kind)], str(kind))
    check_tile_fields(obj)
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
                extra=_extra(obj, _RESULT_FIELDS),
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
                extra=_extra(obj, _BATCH_FIELDS),
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
                raw_size=obj.get("raw_size"),
                raw_sha256=obj.get("raw_sha256"),
                extra=_extra(obj, _FAILURE_FIELDS),
            )
    except (KeyError, TypeError) as exc:
        raise _bad(f"{kind} record is missing or has a malformed field: {exc}") from None
    raise _bad(f"unknown record kind {kind!r}")


def check_tile_fields(obj: Mapping[str, Any]) -> None:
    """Raise ``bad_message`` if a result's ``tile`` or a failure's ``parent`` is malformed.

    The aggregator fuses tiles by these fields: :func:`record_from_dict` checks
    them for every reader, and the aggregator again for objects it was handed
    decoded (a tile result is what its worker's ref was, and workers refuse
    refs whose ``tile`` is malformed: only other writers get here).
    """
    kind = obj.get("kind")
    if kind == "result" and obj.get("tile") is not None:
        try:
            tile_from_meta(obj["tile"])
        except ValueError as exc:
            raise ImageError(BAD_MESSAGE, f"invalid 'tile' field: {exc}") from None
    elif kind == "failure" and not isinstance(obj.get("parent"), (str, type(None))):
        # An empty parent is no parent: a worker writes the one its ref named.
        raise ImageError(
            BAD_MESSAGE, f"invalid 'parent' field: must be a string, got {obj['parent']!r:.40}"
        )
