"""Watch directories: produce a ref for each new file once it is complete.

A file counts as complete when its size and modification time have not
changed for ``settle_s`` seconds (a file being copied or written keeps
growing). Each file version (path, size, mtime) is produced once, even across
restarts: the produced ids are kept in a small JSON state file, written
atomically. :class:`Settler` is the pure part: it is fed listings and a time;
:func:`watch` is the loop that lists, settles and produces until told to stop.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from imgstream.clock import Clock
from imgstream.io.storage import write_atomic
from imgstream.partitioning import Partitioner, partition_key
from imgstream.producers.features import ENRICH
from imgstream.producers.files import ref_for_file
from imgstream.schema.codec import encode
from imgstream.schema.records import ImageRef

Listing = dict[str, tuple[int, int]]  # path -> (size, mtime_ns)


class Settler:
    """Decides when files have stopped changing."""

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self._seen: dict[str, tuple[tuple[int, int], float]] = {}

    def ready(self, listing: Listing, now: float) -> list[str]:
        """Paths whose (size, mtime) has been stable for ``settle_s``; each returned once."""
        out = []
        for path, stamp in listing.items():
            prev = self._seen.get(path)
            if prev is None or prev[0] != stamp:
                self._seen[path] = (stamp, now)
                continue
            if stamp[0] > 0 and now - prev[1] >= self.settle_s:
                out.append(path)
                self._seen[path] = (stamp, float("inf"))  # wait for a new version
        for path in list(self._seen):
            if path not in listing:
                del self._seen[path]
        return sorted(out)


def list_files(roots: Iterable[str]) -> Listing:
    """Regular, non-hidden files under the roots with their size and mtime."""
    listing: Listing = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith("."):
                    continue
                path = os.path.abspath(os.path.join(dirpath, name))
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if os.path.isfile(path):
                    listing[path] = (st.st_size, st.st_mtime_ns)
    return listing


class State:
    """Ids already produced, persisted as JSON (ValueError if the file is not such a state)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ids: set[str] = set()
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)  # ValueError if not JSON
            if not isinstance(data, dict) or not isinstance(data.get("produced", []), list):
                raise ValueError('expected {"produced": [ids]}')
            self.ids = set(data.get("produced", []))

    def __contains__(self, ref_id: object) -> bool:
        return ref_id in self.ids

    def add(self, ids: Iterator[str] | list[str]) -> None:
        """Record ids and save."""
        self.ids.update(ids)
        data = json.dumps({"produced": sorted(self.ids)}).encode("utf-8")
        write_atomic(os.path.abspath(self.path), data)


class _Delivery(Protocol):
    def succeeded(self) -> bool: ...


class WatchSink(Protocol):
    """What :func:`watch` sends through (:class:`~imgstream.kafka_io.KafkaSink` is one)."""

    def partitions(self, topic: str) -> int: ...

    def send_partition(
        self, topic: str, partition: int, key: bytes | None, value: bytes
    ) -> _Delivery: ...

    def flush(self, timeout_s: float | None = None) -> None: ...


def watch(
    dirs: Sequence[str],
    sink: WatchSink,
    topic: str,
    partitioner: Partitioner,
    state: State,
    clock: Clock,
    should_stop: Callable[[], bool],
    settle_s: float = 1.0,
    source: str | None = None,
    partition_by: str = "sequential",
    on_produced: Callable[[ImageRef, bool], None] | None = None,
    interval_s: float = 0.25,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Produce each new, complete file under ``dirs`` once, until ``should_stop()``.

    ``on_produced(ref, delivered)`` is told about each file sent. Only
    delivered ids enter ``state``, so an undelivered file is retried after a
    restart. Returns how many refs were delivered. ``sleep`` waits between
    listings (tests pass one that advances a fake clock).
    """
    enrich = ENRICH.get(partition_by)
    n = sink.partitions(topic)
    settler = Settler(settle_s)
    state_abs = os.path.abspath(state.path)
    produced = 0
    while not should_stop():
        listing = {p: v for p, v in list_files(dirs).items() if p != state_abs}
        sent = []
        for path in settler.ready(listing, clock.monotonic()):
            try:
                ref = ref_for_file(path, clock.wall_ms(), source)
            except OSError:  # gone or unreadable since it was listed
                continue
            if ref.id in state:
                continue
            ref = enrich(ref) if enrich is not None else ref
            future = sink.send_partition(
                topic, partitioner.partition(ref, n), partition_key(ref), encode(ref)
            )
            sent.append((ref, future))
        if sent:
            sink.flush()
            delivered = [r.id for r, f in sent if f.succeeded()]
            state.add(delivered)
            produced += len(delivered)
            if on_produced is not None:
                for ref, f in sent:
                    on_produced(ref, f.succeeded())
        sleep(interval_s)
    return produced
