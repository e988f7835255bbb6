"""Oversized messages on the real embedded broker: dead-lettered, never a stuck partition.

A ref message the broker accepted must always be answerable: its failure
record carries a prefix of it (plus its size and sha256), so the worker can
produce that record, commit past the message and go on to the next one.

What the embedded broker (Tansu, memory storage) accepts: it enforces no
``message.max.bytes`` of its own; records of 1, 3, 8, 16 and 32 MiB were all
accepted and fetched back whole (the producer's ``max_request_size`` is the
only limit). Apache Kafka's default topic maximum is 1 MiB (``message.max.bytes``
= 1048588), so the "largest message" here is a ref of exactly 1 MiB, the
largest a worker parses (``MAX_MESSAGE_BYTES``), next to a 3 MB one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import time

import cv2
import numpy as np
from kafka import KafkaProducer

from imgstream.errors import BAD_MESSAGE
from imgstream.kafka_io import topic_state
from imgstream.schema.codec import MAX_MESSAGE_BYTES, MAX_RAW_PREFIX_BYTES, MAX_RECORD_BYTES, encode
from imgstream.schema.decoding import decode_record
from imgstream.schema.records import Failure, ImageRef, Result


def _ref_of_size(ref_id_prefix: str, size: int) -> bytes:
    """A valid JSON ref object of exactly ``size`` bytes (its id made huge)."""
    head = {"v": 1, "kind": "ref", "uri": "a.png", "ts": 1, "id": ""}
    base = len(json.dumps(head, separators=(",", ":")).encode())
    head["id"] = ref_id_prefix + "x" * (size - base - len(ref_id_prefix))
    data = json.dumps(head, separators=(",", ":")).encode()
    assert len(data) == size
    return data


def test_oversized_refs_are_dead_lettered_and_the_partition_moves_on(topics, tmp_path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    image = root / "after.png"
    cv2.imwrite(str(image), np.full((16, 24, 3), 90, np.uint8))
    huge = _ref_of_size("huge-", 3_000_000)
    at_max = _ref_of_size("atmax-", MAX_MESSAGE_BYTES)
    after = ImageRef(id="after", uri=str(image), ts=int(time.time() * 1000), source="t")
    # The producer needs a larger request size to send them; the broker takes them.
    producer = KafkaProducer(bootstrap_servers=topics.bootstrap, max_request_size=8 << 20)
    offsets = [
        producer.send(topics.refs, value=value, partition=0).get(30).offset
        for value in (huge, at_max, encode(after))
    ]
    producer.close()
    assert offsets == [0, 1, 2]

    worker = topics.start_worker(tmp_path / "out", root, log=tmp_path / "worker.log")
    reader = topics.records()
    try:
        found: list[Result | Failure] = []
        sizes: list[int] = []
        deadline = time.monotonic() + 60

        def complete() -> bool:
            # Records of different topics are not seen in any set order: wait for all three.
            result = any(isinstance(r, Result) and r.id == "after" for r in found)
            return result and sum(isinstance(r, Failure) for r in found) >= 2

        while time.monotonic() < deadline and not complete():
            for msg in reader.poll(0.2):
                record = decode_record(msg.value)
                if isinstance(record, (Result, Failure)):
                    found.append(record)
                    sizes.append(len(msg.value or b""))
        failures = sorted(
            (r for r in found if isinstance(r, Failure) and r.partition == 0),
            key=lambda f: f.offset,
        )
        assert [(f.offset, f.error_type) for f in failures] == [(0, BAD_MESSAGE), (1, BAD_MESSAGE)]
        for failure, raw in zip(failures, (huge, at_max), strict=True):
            assert failure.raw_b64 is not None
            assert base64.b64decode(failure.raw_b64) == raw[:MAX_RAW_PREFIX_BYTES]
            assert failure.raw_size == len(raw)
            assert failure.raw_sha256 == hashlib.sha256(raw).hexdigest()
        assert "over the" in failures[0].error_message  # too large to parse
        assert "'id' is" in failures[1].error_message  # parsed, its id too long
        assert [r.id for r in found if isinstance(r, Result)] == ["after"]
        assert max(sizes) <= MAX_RECORD_BYTES
        # The worker is still running, and its group has committed past all three.
        committed = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and committed != 3:
            states = topic_state(topics.bootstrap, topics.refs, topics.group)
            committed = next(s.committed for s in states if s.partition == 0)
            time.sleep(0.2)
        assert committed == 3
        assert worker.poll() is None
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
