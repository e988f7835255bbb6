"""Codec: round trips and every invalid form becomes a precise bad_message."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgstream.errors import BAD_MESSAGE, ImageError
from imgstream.schema.codec import (
    MAX_RAW_PREFIX_BYTES,
    MAX_RECORD_BYTES,
    MAX_REF_FIELD_CHARS,
    MAX_TS_MS,
    TRUNCATED_MARK,
    b64,
    encode,
)
from imgstream.schema.decoding import decode_record, decode_ref
from imgstream.schema.records import BatchSummary, Failure, ImageRef, Lineage, Result

text = st.text(min_size=1).filter(lambda s: s.strip() and "\x00" not in s)


@given(text, text, st.integers(0, MAX_TS_MS - 1), st.none() | text)
def test_ref_round_trip(id_, uri, ts, source) -> None:
    ref = ImageRef(id=id_, uri=uri, ts=ts, source=source, meta={"k": [1, 2]})
    assert decode_ref(encode(ref), 0) == ref


def test_unknown_fields_are_kept() -> None:
    raw = json.dumps({"v": 1, "kind": "ref", "id": "a", "uri": "x.jpg", "ts": 5, "camera": "c9"})
    ref = decode_ref(raw.encode(), 0)
    assert ref.extra == {"camera": "c9"}
    assert json.loads(encode(ref))["camera"] == "c9"


def test_ts_defaults_to_the_message_timestamp() -> None:
    assert decode_ref(b'{"id":"a","uri":"b"}', 1234).ts == 1234


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "tombstone"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "expected a JSON object"),
        (b'{"v":2,"id":"a","uri":"b"}', "unsupported schema version"),
        (b'{"kind":"result","id":"a","uri":"b"}', "expected kind 'ref'"),
        (b'{"uri":"b"}', "missing required field 'id'"),
        (b'{"id":"a"}', "missing required field 'uri'"),
        (b'{"id":7,"uri":"b"}', "field 'id' must be a string"),
        (b'{"id":"a","uri":""}', "field 'uri' is empty"),
        (b'{"id":"a","uri":"b","ts":"yesterday"}', "field 'ts' must be an integer epoch ms"),
        (b'{"id":"a","uri":"b","ts":-1}', "field 'ts'"),
        (b'{"id":"a","uri":"b","ts":100000000000000000000}', "before year 3000"),
        (b'{"id":"a","uri":"b","ts":32503680000000}', "before year 3000"),
        (b'{"id":"' + b"i" * 4097 + b'","uri":"b"}', "field 'id' is 4097 characters"),
        (b'{"id":"a","uri":"' + b"u" * 4097 + b'"}', "field 'uri' is 4097 characters"),
        (b'{"id":"a","uri":"b","source":"' + b"s" * 4097 + b'"}', "field 'source' is"),
        (b'{"id":"a","uri":"b","meta":{"k":"' + b"m" * 70000 + b'"}}', "field 'meta' is"),
        (b'{"id":"a","uri":"b","ts":true}', "field 'ts'"),
        (b'{"id":"a","uri":"b","source":3}', "field 'source' must be a string"),
        (b'{"id":"a","uri":"b","meta":[]}', "field 'meta' must be an object"),
        (b'{"id":"a","uri":"b\\u0000"}', "NUL"),
        (b"[" * 100000, "not valid JSON"),
    ],
)
def test_invalid_refs_have_a_precise_reason(raw, reason) -> None:
    with pytest.raises(ImageError) as info:
        decode_ref(raw, 0)
    assert info.value.type == BAD_MESSAGE
    assert reason in info.value.message


def test_output_records_round_trip() -> None:
    result = Result(
        id="a",
        uri="/x/a.jpg",
        output_uri="/o/a.png",
        pipeline="gray",
        pipeline_hash="h",
        width=4,
        height=3,
        channels=3,
        outputs={"stats": {"mean": 1.5}},
        timings={"ops": 0.1},
        batch_id="w-1",
        worker="w",
        source="cam",
        ts=1,
        latency_ms=9,
        lineage=Lineage("t", 0, 5, "ab", {"opencv": "4"}),
        bytes_in=10,
    )
    batch = BatchSummary("w-1", "w", 2, 1, 1, 12, "size", 0.1, 0.2, (0, 1), 3)
    failure = Failure("not_found", "gone", "t", 1, 7, "w", 4, id="b", uri="y", raw_b64=None)
    for record in (result, batch, failure):
        assert decode_record(encode(record)) == record
    assert json.loads(encode(failure))["error"] == {"type": "not_found", "message": "gone"}


def _result(outputs, **kw) -> Result:
    fields = dict(
        id="a",
        uri="/x/a.jpg",
        output_uri="/o/a.png",
        pipeline="contours",
        pipeline_hash="h",
        width=4000,
        height=3000,
        channels=1,
        outputs=outputs,
        timings={"ops": 0.1},
        batch_id="w-1",
        worker="w",
        source="cam",
        ts=1,
        latency_ms=9,
        lineage=Lineage("t", 0, 5, "ab", {"opencv": "4"}),
    )
    fields.update(kw)
    return Result(**fields)  # type: ignore[arg-type]


def test_a_ref_at_the_field_limit_is_valid() -> None:
    ref = decode_ref(b'{"id":"' + b"i" * MAX_REF_FIELD_CHARS + b'","uri":"b"}', 0)
    assert len(ref.id) == MAX_REF_FIELD_CHARS
    assert decode_ref(b'{"id":"a","uri":"b","ts":32503679999999}', 0).ts == MAX_TS_MS - 1


def test_a_huge_bad_message_failure_fits_and_keeps_size_and_digest() -> None:
    raw = json.dumps({"id": "x" * 3_000_000, "uri": "a.jpg"}).encode()
    failure = Failure(
        "bad_message", "message is 3000025 bytes", "t", 0, 9, "w", 4, raw_b64=b64(raw)
    )
    data = encode(failure)
    assert len(data) <= MAX_RECORD_BYTES
    obj = json.loads(data)
    assert base64.b64decode(obj["raw"]) == raw[:MAX_RAW_PREFIX_BYTES]
    assert obj["raw_size"] == len(raw)
    assert obj["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert obj["raw_truncated"] is True
    back = decode_record(data)
    assert isinstance(back, Failure)
    assert (back.raw_size, back.raw_sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert encode(back) == data  # a decoded failure re-encodes to the same bytes


def test_a_small_raw_message_is_carried_whole_without_extra_fields() -> None:
    failure = Failure("bad_message", "not JSON", "t", 0, 9, "w", 4, raw_b64=b64(b"{nope"))
    obj = json.loads(encode(failure))
    assert base64.b64decode(obj["raw"]) == b"{nope"
    assert "raw_size" not in obj


def test_echoed_failure_text_is_cut_with_a_marker() -> None:
    big = "e" * 2_000_000
    failure = Failure("op_error", big, "t", 0, 9, "w", 4, id=big, uri=big, source=big, parent=big)
    data = encode(failure)
    assert len(data) <= MAX_RECORD_BYTES
    obj = json.loads(data)
    for value in (obj["id"], obj["uri"], obj["source"], obj["parent"], obj["error"]["message"]):
        assert value.endswith(TRUNCATED_MARK)
        assert len(value) <= 4096
    assert decode_record(data) == decode_record(encode(decode_record(data)))  # type: ignore[arg-type]


def test_a_result_with_huge_outputs_is_truncated_with_counts() -> None:
    boxes = [[i, i, 10, 10] for i in range(200_000)]
    outputs = {
        "contours": {"count": len(boxes), "boxes": boxes},
        "faces": {"count": 1, "boxes": [[1, 2, 3, 4]]},
        "stats": {"brightness": 1.5},
    }
    data = encode(_result(outputs))
    assert len(data) <= MAX_RECORD_BYTES
    back = decode_record(data)
    assert isinstance(back, Result)
    contours = back.outputs["contours"]
    assert contours["truncated"] is True
    assert contours["counts"] == {"boxes": len(boxes)}
    assert contours["count"] == len(boxes)
    assert 0 < len(contours["boxes"]) < len(boxes)
    assert contours["boxes"] == boxes[: len(contours["boxes"])]  # a prefix, in order
    # the small outputs are untouched
    assert back.outputs["faces"] == outputs["faces"]
    assert back.outputs["stats"] == outputs["stats"]


def test_a_result_with_a_huge_scalar_output_is_replaced_by_a_marker() -> None:
    data = encode(_result({"qr": {"found": True, "text": "q" * 2_000_000}}))
    assert len(data) <= MAX_RECORD_BYTES
    qr = json.loads(data)["outputs"]["qr"]
    assert qr["truncated"] is True
    assert qr["bytes"] > 2_000_000


def test_a_result_that_fits_is_not_touched() -> None:
    outputs = {"contours": {"count": 2, "boxes": [[1, 2, 3, 4], [5, 6, 7, 8]]}}
    assert json.loads(encode(_result(outputs)))["outputs"] == outputs


@pytest.mark.parametrize(
    ("field", "value"),
    [("ts", 10**20), ("ts", -5), ("width", 2**64), ("latency_ms", "9"), ("width", True)],
)
def test_decode_record_rejects_integers_sqlite_cannot_hold(field, value) -> None:
    obj = json.loads(encode(_result({})))
    obj[field] = value
    with pytest.raises(ImageError) as info:
        decode_record(json.dumps(obj).encode())
    assert info.value.type == BAD_MESSAGE
    assert repr(field) in info.value.message


def test_unknown_fields_of_output_records_survive_a_round_trip() -> None:
    for record in (
        _result({}),
        BatchSummary("w-1", "w", 2, 1, 1, 12, "size", 0.1, 0.2, (0, 1), 3),
        Failure("not_found", "gone", "t", 1, 7, "w", 4, id="b"),
    ):
        obj = {**json.loads(encode(record)), "zone": "north"}
        back = decode_record(json.dumps(obj).encode())
        assert back.extra == {"zone": "north"}  # type: ignore[union-attr]
        assert json.loads(encode(back)) == obj


def test_a_failure_drops_unknown_fields_too_large_to_echo() -> None:
    obj = json.loads(encode(Failure("not_found", "gone", "t", 1, 7, "w", 4, id="b")))
    back = decode_record(json.dumps({**obj, "blob": "b" * 1_000_000}).encode())
    assert json.loads(encode(back)) == obj


@pytest.mark.parametrize(
    "tile",
    [
        {"rows": 2, "cols": 2},  # no parent
        {"parent": "p", "rows": "x", "cols": 2},
        [1, 2],
        "tile",
    ],
)
def test_a_malformed_tile_is_a_bad_message_for_every_reader(tile) -> None:
    """Refs and results alike: whoever decodes them gets bad_message, not a later KeyError."""
    ref = {"v": 1, "kind": "ref", "id": "a", "uri": "a.png", "ts": 1, "tile": tile}
    with pytest.raises(ImageError) as info:
        decode_ref(json.dumps(ref).encode(), 0)
    assert info.value.type == "bad_message"
    result = json.loads(encode(_result({})))
    result["tile"] = tile
    with pytest.raises(ImageError) as info:
        decode_record(json.dumps(result).encode())
    assert info.value.type == "bad_message"
