"""Codec: round trips and every invalid form becomes a precise bad_message."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgstream.codec import decode_record, decode_ref, encode
from imgstream.errors import BAD_MESSAGE, ImageError
from imgstream.records import BatchSummary, Failure, ImageRef, Lineage, Result

text = st.text(min_size=1).filter(lambda s: s.strip() and "\x00" not in s)


@given(text, text, st.integers(0, 2**53), st.none() | text)
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
        (b'{"id":"a","uri":"b","ts":"yesterday"}', "field 'ts' must be a non-negative integer"),
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
