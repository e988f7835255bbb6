"""Records <-> bytes: versioned JSON, one object per message.

Every record carries ``"v": 1`` and a ``"kind"``. Decoding a ref is strict
about what it needs (``id`` and ``uri`` as non-empty strings, typed optional
fields) and keeps fields it does not know. Invalid input raises
:class:`~imgstream.errors.ImageError` of type ``bad_message`` with a precise
reason; it never raises anything else.
"""

from __future__ import annotations

import base64
import hashlib
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

#: The largest message a worker parses as a ref. Anything larger is a
#: ``bad_message`` (its failure record carries only a prefix of it).
MAX_MESSAGE_BYTES = 1 << 20

#: Every result and failure record encodes to at most this many bytes: well
#: under the producer's default ``max_request_size`` (1 MB) and the brokers'
#: default message size, so any message the broker accepted can always be
#: answered with a record the broker accepts too. A record that could not be
#: produced would be retried, fail the worker, and block its partition forever.
MAX_RECORD_BYTES = 256 * 1024

#: Longest ``id``, ``uri``, ``source``, ``sha256`` or ``version`` of a valid ref:
#: these are echoed into result and failure records, so a ref whose id is
#: megabytes long is not a ref but a ``bad_message``.
MAX_REF_FIELD_CHARS = 4096

#: Largest ``tile`` or ``meta`` object of a valid ref, encoded.
MAX_REF_OBJECT_BYTES = 64 * 1024

#: Longest text a failure record echoes back (ids, uris, sources, error
#: messages); longer text is cut and ends with :data:`TRUNCATED_MARK`.
MAX_ECHO_CHARS = 4096

#: How much of an unparsable message a failure record carries (raw bytes,
#: before base64); ``raw_size`` and ``raw_sha256`` describe the whole message.
MAX_RAW_PREFIX_BYTES = 16 * 1024

#: Upper bound of every timestamp in ms (exclusive): 3000-01-01T00:00:00Z.
#: Larger values are typos or garbage, and past 2**63 they overflow SQLite.
MAX_TS_MS = 32_503_680_000_000

#: Largest other integer a record may carry into SQLite (offsets, sizes).
MAX_INT = 2**63 - 1

#: Appended to echoed text that was cut to fit.
TRUNCATED_MARK = "...[truncated]"

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
    """The JSON object of a result (unknown fields kept)."""
    out: dict[str, Any] = dict(r.extra)
    out.update(
        {
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
    )
    if r.lineage.tiles:
        out["lineage"]["tiles"] = list(r.lineage.tiles)
    if r.tile is not None:
        out["tile"] = dict(r.tile)
    return out


def bound_result(out: dict[str, Any], limit: int = MAX_RECORD_BYTES) -> dict[str, Any]:
    """A result object that encodes under ``limit``: its largest outputs truncated.

    A truncated output keeps its other fields and says so: ``"truncated": true``
    and ``"counts"``, the original length of every list it cut (thousands of
    contours or detections, say). An output that still does not fit becomes
    ``{"truncated": true, "bytes": n}``. Results that fit are returned as is.
    """
    size = len(_dumps(out))
    if size <= limit:
        return out
    outputs = dict(out.get("outputs") or {})
    sizes = {name: len(_dumps({"o": value})) for name, value in outputs.items()}
    excess = size - limit + 1024  # room for the markers
    for name in sorted(sizes, key=lambda n: sizes[n], reverse=True):
        if excess <= 0:
            break
        shrunk = _shrink(outputs[name], max(0, sizes[name] - excess))
        new_size = len(_dumps({"o": shrunk}))
        excess -= sizes[name] - new_size
        outputs[name] = shrunk
    out = {**out, "outputs": outputs}
    if len(_dumps(out)) > limit:
        # Not the outputs: huge timings or tile fields (never from a valid ref).
        out = {**out, "outputs": {"truncated": True}, "timings": {}}
        out.pop("tile", None)
    return out


def _size(value: Any) -> int:
    return len(_dumps({"o": value}))


def _shrink(value: Any, allowance: int) -> Any:
    """``value`` cut to at most ``allowance`` encoded bytes (lists cut from the end)."""
    if isinstance(value, dict):
        out = dict(value)
        counts: dict[str, int] = {}
        lists = sorted(
            (k for k, v in out.items() if isinstance(v, list) and v),
            key=lambda k: _size(out[k]),
            reverse=True,
        )
        for key in lists:
            items = out[key]
            counts[key] = len(items)
            for _ in range(20):
                size = _size(out) + 64  # the markers
                if size <= allowance or not out[key]:
                    break
                kept = out[key]
                # Keep the share of items that fits; at least a quarter fewer each time.
                share = max(0, _size(kept) - (size - allowance)) / max(1, _size(kept))
                out[key] = kept[: min(int(len(kept) * share), len(kept) * 3 // 4)]
            if len(out[key]) == len(items):
                del counts[key]
        if counts:
            out["truncated"] = True
            out["counts"] = counts
        if _size(out) <= allowance:
            return out
    return {"truncated": True, "bytes": _size(value)}


def batch_to_dict(b: BatchSummary) -> dict[str, Any]:
    """The JSON object of a batch summary (unknown fields kept)."""
    out: dict[str, Any] = dict(b.extra)
    out.update(
        {
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
    )
    return out


def clip_text(text: str | None, limit: int = MAX_ECHO_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters, marked with :data:`TRUNCATED_MARK` if cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: max(0, limit - len(TRUNCATED_MARK))] + TRUNCATED_MARK


def raw_fields(raw_b64: str) -> dict[str, Any]:
    """The ``raw`` fields of a failure: at most a prefix, plus the whole's size and sha256.

    Small messages are carried whole (and without the extra fields, as before).
    """
    # base64 of MAX_RAW_PREFIX_BYTES is 4/3 as long; anything up to that fits.
    if len(raw_b64) <= (MAX_RAW_PREFIX_BYTES + 2) // 3 * 4:
        return {"raw": raw_b64}
    try:
        raw = base64.b64decode(raw_b64, validate=True)
    except ValueError:
        # Not base64 (never written by imgstream): keep a prefix of the text itself.
        raw = raw_b64.encode("utf-8", "replace")
    return {
        "raw": b64(raw[:MAX_RAW_PREFIX_BYTES]),
        "raw_size": len(raw),
        "raw_sha256": hashlib.sha256(raw).hexdigest(),
        "raw_truncated": True,
    }


def failure_to_dict(f: Failure) -> dict[str, Any]:
    """The JSON object of a failure; always under :data:`MAX_RECORD_BYTES`.

    Echoed text (id, uri, source, parent, error message) is cut to
    :data:`MAX_ECHO_CHARS` and the raw message to a prefix, so a failure can
    be produced for any message, however large.
    """
    # Unknown fields are kept only while small: a failure must always fit.
    out: dict[str, Any] = (
        dict(f.extra) if f.extra and len(_dumps(f.extra)) <= MAX_ECHO_CHARS else {}
    )
    out |= {
        "v": SCHEMA_VERSION,
        "kind": "failure",
        "id": clip_text(f.id),
        "uri": clip_text(f.uri),
        "source": clip_text(f.source),
        "error": {"type": clip_text(f.error_type, 64), "message": clip_text(f.error_message)},
        "topic": f.topic,
        "partition": f.partition,
        "offset": f.offset,
        "attempts": f.attempts,
        "batch_id": f.batch_id,
        "worker": f.worker,
        "ts": f.ts,
    }
    if f.raw_b64 is not None:
        out.update(raw_fields(f.raw_b64))
        if f.raw_size is not None:
            out["raw_size"] = f.raw_size
        if f.raw_sha256 is not None:
            out["raw_sha256"] = f.raw_sha256
        if "raw_size" in out:  # only ever written for a prefix
            out["raw_truncated"] = True
    if f.parent is not None:
        out["parent"] = clip_text(f.parent)
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
    """UTF-8 JSON bytes of a record; a result is cut to fit :data:`MAX_RECORD_BYTES`.

    (Failures always fit by construction, see :func:`failure_to_dict`.)
    """
    obj = to_dict(record)
    data = _dumps(obj)
    if len(data) > MAX_RECORD_BYTES and isinstance(record, Result):
        data = _dumps(bound_result(obj))
    return data


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
    if len(value) > MAX_REF_FIELD_CHARS:
        raise _bad(f"field {name!r} is {len(value)} characters, over {MAX_REF_FIELD_CHARS}")
    return value


def _opt_obj(obj: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(f"field {name!r} must be an object, got {type(value).__name__}")
    size = len(_dumps(value))
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
