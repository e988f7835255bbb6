"""Integration fixtures: the real embedded broker, worker processes, record readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from imgstream.broker import EmbeddedBroker
from imgstream.codec import decode_record, encode
from imgstream.kafka_io import KafkaSink, TopicReader, ensure_topics
from imgstream.records import BatchSummary, Failure, ImageRef, Result


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded broker for the session, on a free loopback port."""
    with EmbeddedBroker() as b:
        yield b


class Topics:
    """Unique topic names and a group for one test."""

    def __init__(self, bootstrap: str, partitions: int = 4) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.refs = f"refs-{tag}"
        self.results = f"results-{tag}"
        self.dlq = f"dlq-{tag}"
        self.group = f"group-{tag}"
        self._readers: list[TopicReader] = []
        ensure_topics(bootstrap, {self.refs: partitions, self.results: 2, self.dlq: 1})

    def produce(self, refs: list[ImageRef], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
        sink = KafkaSink(self.bootstrap)
        n = sink.partitions(self.refs)
        for i, ref in enumerate(refs):
            sink.send_partition(self.refs, i % n, ref.id.encode(), encode(ref))
        for j, value in enumerate(raw):
            sink.send_partition(self.refs, j % n, None, value)
        sink.close()

    def worker_cmd(self, out: Path, root: Path, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "imgstream.cli",
            "work",
            "--bootstrap",
            self.bootstrap,
            "--group",
            self.group,
            "--topic",
            self.refs,
            "--results-topic",
            self.results,
            "--dlq-topic",
            self.dlq,
            "--out",
            str(out),
            "--root",
            str(root),
            "--threads",
            "2",
            *extra,
        ]

    def start_worker(self, out: Path, root: Path, *extra: str, log: Path | None = None):
        if log is None:
            return subprocess.Popen(
                self.worker_cmd(out, root, *extra),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        with open(log, "ab") as stream:
            return subprocess.Popen(
                self.worker_cmd(out, root, *extra), stdout=stream, stderr=subprocess.STDOUT
            )

    def records(self) -> TopicReader:
        reader = TopicReader(self.bootstrap, [self.results, self.dlq])
        self._readers.append(reader)
        return reader

    def close(self) -> None:
        for reader in self._readers:
            reader.close()


def collect_until(
    reader: TopicReader, ids: set[str], timeout_s: float, settle_s: float = 0.0
) -> tuple[list[Result | Failure], list[BatchSummary]]:
    """Read records until every id has one (then ``settle_s`` more), or time out."""
    records: list[Result | Failure] = []
    batches: list[BatchSummary] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    settle_until = None
    while time.monotonic() < deadline:
        for msg in reader.poll(0.2):
            rec = decode_record(msg.value)
            if isinstance(rec, BatchSummary):
                batches.append(rec)
            elif isinstance(rec, (Result, Failure)):
                records.append(rec)
                if rec.id is not None:
                    seen.add(rec.id)
        if ids <= seen:
            if settle_until is None:
                settle_until = time.monotonic() + settle_s
            if time.monotonic() >= settle_until:
                break
    return records, batches


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout)


def write_images(directory: Path, n: int, size: tuple[int, int] = (48, 64)) -> list[Path]:
    """n small, distinct colour PNGs."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    paths = []
    for i in range(n):
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        path = directory / f"img{i:05d}.png"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 0])
        paths.append(path)
    return paths


def refs_for(paths: list[Path], source: str = "test") -> list[ImageRef]:
    now = int(time.time() * 1000)
    return [ImageRef(id=p.stem, uri=str(p), ts=now, source=source) for p in paths]


@pytest.fixture
def topics(broker: EmbeddedBroker) -> Iterator[Topics]:
    t = Topics(broker.bootstrap)
    yield t
    t.close()


os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
