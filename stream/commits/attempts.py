"""Crash isolation: how many times each uncommitted image was started, per partition.

An image that kills its worker process (a segfault in a decoder or a model,
an abort, the kernel's OOM killer) leaves no failure record: its offset stays
uncommitted, and the next owner of the partition would start it again and
die the same way, forever. So before a worker starts images it records, on
the attempts topic, how many times each uncommitted image of the partition
has been started (an :class:`AttemptBook` entry, encoded here). The record is
keyed by group and partition, so the count travels with the partition to
whichever worker owns it next, on any host.

A worker assigned a partition reads its latest record. Offsets above the
committed one that a previous life started are *suspects*: one of them may
have killed it. Suspects are run one at a time with nothing else in flight
in the process, each after its count has been raised and recorded, so a
crash then points at exactly one image. A suspect already started
``max_attempts`` times is not run again: it becomes a ``crashed`` failure
record and is committed past, and the partition moves on.

Why a topic and not Kafka's offset-commit metadata: the metadata would be
committed with the offsets, but the embedded broker drops it, and a count
must be written *before* an image starts, not when its offset is committed.

Pure: no Kafka, no clock. The runner owns one book and feeds it on the poll
thread; :mod:`imgstream.kafka_io.attempts` reads and writes the records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from imgstream.schema.records import TopicPartition

#: Starts of one image (across worker lives) before it is dead-lettered as ``crashed``.
DEFAULT_MAX_ATTEMPTS = 2

Counts = dict[int, int]


def encode_counts(counts: Mapping[int, int]) -> list[list[int]]:
    """Offset -> count as ``[[first, end, count], ...]`` runs (consecutive offsets, one count)."""
    runs: list[list[int]] = []
    for offset in sorted(counts):
        n = counts[offset]
        if runs and runs[-1][1] == offset and runs[-1][2] == n:
            runs[-1][1] = offset + 1
        else:
            runs.append([offset, offset + 1, n])
    return runs


def decode_counts(runs: Any) -> Counts:
    """The inverse of :func:`encode_counts`; raises ValueError for anything else."""
    if not isinstance(runs, list):
        raise ValueError("counts must be a list of [first, end, count] runs")
    counts: Counts = {}
    for run in runs:
        if (
            not isinstance(run, list)
            or len(run) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in run)
        ):
            raise ValueError(f"not a [first, end, count] run: {run!r}")
        first, end, n = run
        if first < 0 or end <= first or n < 1 or end - first > 1_000_000:
            raise ValueError(f"not a valid run: {run!r}")
        for offset in range(first, end):
            counts[offset] = n
    return counts


def record_key(group: str, tp: TopicPartition) -> bytes:
    """The attempts record's key: one per group and partition (compaction keeps the last)."""
    return json.dumps([group, tp.topic, tp.partition]).encode("utf-8")


def encode_record(group: str, tp: TopicPartition, counts: Mapping[int, int], worker: str) -> bytes:
    """An attempts record's value."""
    body = {
        "v": 1,
        "kind": "attempts",
        "group": group,
        "topic": tp.topic,
        "partition": tp.partition,
        "worker": worker,
        "counts": encode_counts(counts),
    }
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode_record(value: bytes) -> tuple[str, TopicPartition, Counts]:
    """(group, partition, counts) of an attempts record; raises ValueError if it is not one."""
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("kind") != "attempts" or body.get("v") != 1:
        raise ValueError("not an attempts record")
    group, topic, partition = body.get("group"), body.get("topic"), body.get("partition")
    if not isinstance(group, str) or not isinstance(topic, str) or type(partition) is not int:
        raise ValueError("an attempts record needs group, topic and partition")
    return group, TopicPartition(topic, partition), decode_counts(body.get("counts"))


@dataclass(frozen=True)
class Verdict:
    """What to do with one fetched message."""

    #: ``run`` (with the others), ``isolate`` (alone) or ``crashed`` (dead-letter it).
    action: str
    #: Times it was started before, by earlier lives of a worker.
    attempts: int


RUN = Verdict("run", 0)


class AttemptBook:
    """Starts of the uncommitted images of one worker's partitions.

    ``loaded`` holds what earlier lives recorded (read on assignment): those
    offsets are suspects. ``started`` holds what this life started and has
    not seen complete: the counts the next record carries. A count is the
    loaded count plus one however often this life restarts the image (an
    aborted transaction re-reads it), so only a worker's death counts.

    Ownership: every attribute belongs to the poll thread.
    """

    def __init__(self, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self._loaded: dict[TopicPartition, Counts] = {}
        self._started: dict[TopicPartition, Counts] = {}

    def load(self, tp: TopicPartition, counts: Mapping[int, int], committed: int | None) -> None:
        """A partition was assigned: earlier lives started ``counts`` (those below ``committed``
        are done)."""
        low = 0 if committed is None else committed
        self._loaded[tp] = {o: n for o, n in counts.items() if o >= low}
        self._started.pop(tp, None)

    def suspects(self, tp: TopicPartition) -> int:
        """How many offsets of ``tp`` an earlier life started and did not finish."""
        return len(self._loaded.get(tp, {}))

    def verdict(self, tp: TopicPartition, offset: int) -> Verdict:
        """Whether a fetched message runs with the others, alone, or not at all."""
        before = self._loaded.get(tp, {}).get(offset)
        if before is None:
            return RUN
        if before >= self.max_attempts:
            return Verdict("crashed", before)
        return Verdict("isolate", before)

    def start(self, tp: TopicPartition, offsets: Iterable[int]) -> None:
        """These offsets are about to start (record :meth:`counts` before they do)."""
        loaded = self._loaded.get(tp, {})
        started = self._started.setdefault(tp, {})
        for offset in offsets:
            started[offset] = loaded.get(offset, 0) + 1

    def settle(self, tp: TopicPartition, offset: int) -> None:
        """A suspect was run alone and finished, or was dead-lettered: no longer suspect."""
        self._loaded.get(tp, {}).pop(offset, None)

    def counts(self, tp: TopicPartition, pending: Iterable[int]) -> Counts:
        """The counts to record for ``tp``: started offsets still ``pending``, and the
        suspects not run yet (so a crash before their turn keeps their counts)."""
        keep = set(pending)
        started = self._started.get(tp, {})
        for offset in [o for o in started if o not in keep]:
            del started[offset]
        out = dict(self._loaded.get(tp, {}))
        out.update(started)
        return out

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions revoked: their counts belong to the next owner now."""
        for tp in tps:
            self._loaded.pop(tp, None)
            self._started.pop(tp, None)
