"""Records -> bytes: versioned JSON, one object per message, and the limits of both ways.

Every record carries ``"v": 1`` and a ``"kind"``. Results are cut to fit
:data:`MAX_RECORD_BYTES`; failure records fit by construction. Decoding
(bytes -> records, strict, ``bad_message`` on invalid input) is
:mod:`imgstream.schema.decoding`, which enforces the limits defined here.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from imgstream.schema.records import (
    SCHEMA_VERSION,
    BatchSummary,
    Failure,
    ImageRef,
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

REF_FIELDS = {"v", "kind", "id", "uri", "ts", "source", "sha256", "version", "tile", "meta"}


def dumps(obj: Mapping[str, Any]) -> bytes:
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
    size = len(dumps(out))
    if size <= limit:
        return out
    outputs = dict(out.get("outputs") or {})
    sizes = {name: len(dumps({"o": value})) for name, value in outputs.items()}
    excess = size - limit + 1024  # room for the markers
    for name in sorted(sizes, key=lambda n: sizes[n], reverse=True):
        if excess <= 0:
            break
        shrunk = _shrink(outputs[name], max(0, sizes[name] - excess))
        new_size = len(dumps({"o": shrunk}))
        excess -= sizes[name] - new_size
        outputs[name] = shrunk
    out = {**out, "outputs": outputs}
    if len(dumps(out)) > limit:
        # Not the outputs: huge timings or tile fields (never from a valid ref).
        out = {**out, "outputs": {"truncated": True}, "timings": {}}
        out.pop("tile", None)
    return out


def _size(value: Any) -> int:
    return len(dumps({"o": value}))


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
    out: dict[str, Any] = dict(f.extra) if f.extra and len(dumps(f.extra)) <= MAX_ECHO_CHARS else {}
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
    data = dumps(obj)
    if len(data) > MAX_RECORD_BYTES and isinstance(record, Result):
        data = dumps(bound_result(obj))
    return data


def b64(raw: bytes | None) -> str:
    """Base64 text of raw message bytes ('' for a tombstone)."""
    return base64.b64encode(raw or b"").decode("ascii")
