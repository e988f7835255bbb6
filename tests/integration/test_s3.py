"""Refs and outputs in a real S3 server (moto's, on loopback): the worker's image path.

The processor reads ``s3://`` refs and PUTs its outputs to ``s3://``; the
outputs are read back over plain HTTP and compared with OpenCV's own gray
conversion of the original file. Bad refs become failure records of the
right type; the fault proxy makes the store throttle, fail and hang.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgstream.clock import SystemClock
from imgstream.config import WorkerConfig
from imgstream.errors import OutputUnavailable
from imgstream.io.objstore import ObjectStore, parse_s3
from imgstream.io.outage import OutputGate
from imgstream.io.stores import Inputs
from imgstream.ops import build_registry
from imgstream.ops.pipeline import parse_spec
from imgstream.schema.codec import encode
from imgstream.schema.records import Failure, ImageRef, Message, Result
from imgstream.worker.processor import ImageProcessor
from tests.fixtures.s3 import Fault, FaultProxy, S3Server, s3_env


def _processor(
    out: str, roots: tuple[str, ...], max_bytes: int = 64 << 20, gate: OutputGate | None = None
) -> ImageProcessor:
    config = WorkerConfig(
        bootstrap="unused",
        out_dir=out,
        roots=roots,
        max_bytes=max_bytes,
        threads=2,
        worker_id="w-s3",
    )
    return ImageProcessor(config, parse_spec("gray", build_registry()), SystemClock(), gate)


def _message(ref: ImageRef, offset: int = 0) -> Message:
    return Message("refs", 0, offset, ref.id.encode(), encode(ref), ref.ts)


def _ref(uri: str, rid: str) -> ImageRef:
    return ImageRef(id=rid, uri=uri, ts=int(time.time() * 1000), source="cam")


def _gray_of(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)


def test_worker_reads_s3_refs_and_writes_s3_outputs(
    s3_server: S3Server, s3_bucket: str, s3_env_set: dict[str, str], photos: list[Path]
) -> None:
    uris = {p.stem: s3_server.put(s3_bucket, f"in/{p.name}", p.read_bytes()) for p in photos}
    proc = _processor(f"s3://{s3_bucket}/out", (f"s3://{s3_bucket}/in",))
    by_id: dict[str, Result] = {}
    for i, p in enumerate(photos):
        outcome = proc.process(_message(_ref(uris[p.stem], p.stem), i), "b1")
        assert isinstance(outcome.record, Result), outcome.record
        by_id[p.stem] = outcome.record
    for p in photos:
        result = by_id[p.stem]
        expected_key = f"out/{proc.pipeline.hash}/cam/{p.stem}.png"
        assert result.output_uri == f"s3://{s3_bucket}/{expected_key}"
        data = s3_server.get(s3_bucket, expected_key)
        assert data is not None, expected_key
        out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(out, _gray_of(p)), p.name
        assert result.lineage.sha256 is not None
    # a replay writes the same key with the same bytes (idempotent by key)
    first = s3_server.get(s3_bucket, f"out/{proc.pipeline.hash}/cam/{photos[0].stem}.png")
    again = proc.process(_message(_ref(uris[photos[0].stem], photos[0].stem)), "b2")
    assert isinstance(again.record, Result)
    assert s3_server.get(s3_bucket, f"out/{proc.pipeline.hash}/cam/{photos[0].stem}.png") == first
    keys = s3_server.keys(s3_bucket, "out/")
    assert len(keys) == len(photos)


def test_bad_s3_refs_become_typed_failures(
    s3_server: S3Server, s3_bucket: str, s3_env_set: dict[str, str], photos: list[Path]
) -> None:
    small = photos[0]
    big = max(photos, key=lambda p: p.stat().st_size)
    s3_server.put(s3_bucket, f"in/{small.name}", small.read_bytes())
    s3_server.put(s3_bucket, f"in/{big.name}", big.read_bytes())
    s3_server.put(s3_bucket, "secret/x.jpg", small.read_bytes())
    limit = big.stat().st_size - 1
    assert small.stat().st_size <= limit
    proc = _processor(str(Path.cwd() / "unused-out"), (f"s3://{s3_bucket}/in",), limit)
    cases = {
        f"s3://{s3_bucket}/secret/x.jpg": "forbidden",  # outside the root
        f"s3://{s3_bucket}/in/../secret/x.jpg": "forbidden",  # '..' segment
        f"s3://{s3_bucket}/inx/x.jpg": "forbidden",  # a sibling prefix, not under in/
        "s3://another-bucket/in/x.jpg": "forbidden",  # another bucket
        f"s3://{s3_bucket}/in/missing.jpg": "not_found",
        f"s3://{s3_bucket}/in/{big.name}": "too_large",
        str(small): "forbidden",  # a local path, with no local root
    }
    for i, (uri, kind) in enumerate(cases.items()):
        outcome = proc.process(_message(_ref(uri, f"r{i}"), i), "b1")
        assert isinstance(outcome.record, Failure), uri
        assert outcome.record.error_type == kind, (uri, outcome.record.error_message)


def test_local_and_s3_roots_together(
    s3_server: S3Server,
    s3_bucket: str,
    s3_env_set: dict[str, str],
    photos: list[Path],
    tmp_path: Path,
) -> None:
    uri = s3_server.put(s3_bucket, "in/a.jpg", photos[0].read_bytes())
    out = tmp_path / "out"
    proc = _processor(str(out), (str(photos[0].parent), f"s3://{s3_bucket}/in"))
    for i, ref_uri in enumerate((uri, str(photos[0]))):
        outcome = proc.process(_message(_ref(ref_uri, f"id{i}"), i), "b")
        assert isinstance(outcome.record, Result), outcome.record
        assert os.path.isfile(outcome.record.output_uri)
        written = cv2.imread(outcome.record.output_uri, cv2.IMREAD_UNCHANGED)
        assert np.array_equal(written, _gray_of(photos[0]))


def test_object_store_lists_whole_segments_in_key_order(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    for key in ("in/b.jpg", "in/a.jpg", "in/sub/c.jpg", "inx/d.jpg", "top.jpg"):
        s3_server.put(s3_bucket, key, b"x" * 3)
    store = ObjectStore(s3_env(s3_server.endpoint, tmp_path))
    listed = [(str(o.url), o.size) for o in store.list(parse_s3(f"s3://{s3_bucket}/in"))]
    assert listed == [
        (f"s3://{s3_bucket}/in/a.jpg", 3),
        (f"s3://{s3_bucket}/in/b.jpg", 3),
        (f"s3://{s3_bucket}/in/sub/c.jpg", 3),
    ]
    assert len(list(store.list(parse_s3(f"s3://{s3_bucket}")))) == 5
    assert store.size(parse_s3(f"s3://{s3_bucket}/top.jpg")) == 3


def _proxied(proxy: FaultProxy, tmp_path: Path, attempts: int, timeout_s: float) -> ObjectStore:
    env = {**s3_env(proxy.endpoint, tmp_path), "AWS_MAX_ATTEMPTS": str(attempts)}
    return ObjectStore(env, timeout_s=timeout_s, first_backoff_s=0.01, max_backoff_s=0.05)


def _inputs(store: ObjectStore, bucket: str, max_bytes: int = 1 << 20) -> Inputs:
    return Inputs((f"s3://{bucket}/in",), max_bytes, client=store)


def test_throttling_is_retried_with_back_off(
    s3_server: S3Server, s3_bucket: str, s3_proxy: FaultProxy, tmp_path: Path
) -> None:
    s3_server.put(s3_bucket, "in/a.jpg", b"abc")
    inputs = _inputs(_proxied(s3_proxy, tmp_path, attempts=4, timeout_s=10), s3_bucket)
    slow = s3_proxy.add(Fault("/in/a.jpg", status=503, times=2))
    assert inputs.read(f"s3://{s3_bucket}/in/a.jpg").data == b"abc"
    assert slow.hits == 2  # two throttled answers, then the object


def test_persistent_5xx_and_timeouts_become_io_error(
    s3_server: S3Server, s3_bucket: str, s3_proxy: FaultProxy, tmp_path: Path
) -> None:
    s3_server.put(s3_bucket, "in/a.jpg", b"abc")
    s3_server.put(s3_bucket, "in/b.jpg", b"abc")
    inputs = _inputs(_proxied(s3_proxy, tmp_path, attempts=3, timeout_s=1.0), s3_bucket)
    broken = s3_proxy.add(Fault("/in/a.jpg", status=500))
    with pytest.raises(Exception) as err:
        inputs.read(f"s3://{s3_bucket}/in/a.jpg")
    assert getattr(err.value, "type", None) == "io_error", err.value
    assert broken.hits == 3  # every attempt was made
    hang = s3_proxy.add(Fault("/in/b.jpg", hang_s=3.0))
    with pytest.raises(Exception) as err:
        inputs.read(f"s3://{s3_bucket}/in/b.jpg")
    assert getattr(err.value, "type", None) == "io_error", err.value
    assert hang.hits >= 2  # a timed-out GET is retried too


def test_max_bytes_is_checked_before_the_body_is_read(
    s3_server: S3Server, s3_bucket: str, s3_proxy: FaultProxy, tmp_path: Path
) -> None:
    """The proxy announces 1 GB and sends nothing: reading the body would time out."""
    s3_server.put(s3_bucket, "in/huge.jpg", b"abc")
    inputs = _inputs(_proxied(s3_proxy, tmp_path, attempts=1, timeout_s=2.0), s3_bucket)
    s3_proxy.add(Fault("/in/huge.jpg", declare_length=1 << 30, hang_s=5.0))
    with pytest.raises(Exception) as err:
        inputs.read(f"s3://{s3_bucket}/in/huge.jpg")
    assert getattr(err.value, "type", None) == "too_large", err.value


def test_access_denied_is_forbidden(
    s3_server: S3Server, s3_bucket: str, s3_proxy: FaultProxy, tmp_path: Path
) -> None:
    s3_server.put(s3_bucket, "in/a.jpg", b"abc")
    inputs = _inputs(_proxied(s3_proxy, tmp_path, attempts=3, timeout_s=5), s3_bucket)
    s3_proxy.add(Fault("/in/a.jpg", status=403))
    with pytest.raises(Exception) as err:
        inputs.read(f"s3://{s3_bucket}/in/a.jpg")
    assert getattr(err.value, "type", None) == "forbidden", err.value


def test_output_store_outage_holds_the_image_back(
    s3_server: S3Server,
    s3_bucket: str,
    s3_proxy: FaultProxy,
    tmp_path: Path,
    photos: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store that refuses outputs is an outage (retried, never a failure record)."""
    uri = s3_server.put(s3_bucket, "in/a.jpg", photos[0].read_bytes())
    env = {**s3_env(s3_proxy.endpoint, tmp_path), "AWS_MAX_ATTEMPTS": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    gate = OutputGate(SystemClock(), None, None, first_backoff_s=0.01, max_backoff_s=0.05)
    proc = _processor(f"s3://{s3_bucket}/out", (f"s3://{s3_bucket}/in",), gate=gate)
    refused = s3_proxy.add(Fault("/out/", status=503, method="PUT", times=3))
    outcome = proc.process(_message(_ref(uri, "a")), "b")
    assert isinstance(outcome.record, Result), outcome.record
    assert refused.hits == 3
    assert s3_server.get(s3_bucket, f"out/{proc.pipeline.hash}/cam/a.png") is not None
    s3_proxy.add(Fault("/out/", status=503, method="PUT"))
    gate.close()  # shutdown while the store is still out: the image stays uncommitted
    with pytest.raises(OutputUnavailable):
        proc.process(_message(_ref(uri, "b")), "b")
