"""Per-source state of a stateful pipeline: in order, versioned, snapshotted, restored.

A stateful operation (``motion``, ``dedupe``, a plugin's) remembers the past
of each source. :class:`SourceStates` is what the worker keeps of it, per
``(partition, source)``:

- **Order.** The poll thread :meth:`~SourceStates.reserve`\\ s each frame's
  turn in offset order; an image thread runs the pipeline on a frame only in
  its :meth:`~SourceStates.turn`, with the state the previous frame left.
  Reading and decoding still run in parallel; different sources run in
  parallel.
- **Versions.** Each frame's pipeline leaves a new state (the old one is never
  changed: :meth:`~imgstream.ops.pipeline.Pipeline.run`), kept with the frame's
  offset until a commit covers it.
- **Snapshots.** Before offsets are committed (in the same transaction with
  ``--exactly-once``), :meth:`~SourceStates.snapshot` gives a record for
  every source whose state moved: the state after its last frame below the
  commit point (``upto``), and the snapshot of the last commit that went
  through (``prev``). Written to a compacted topic keyed by group, pipeline
  hash, partition and source (:mod:`imgstream.kafka_io.statestore`).
- **Restore.** On assignment, the partition's records are read back and each
  source gets the state as of the committed offset ``C``: the record's
  ``cur`` if ``cur.upto <= C`` (every frame of the source below ``C`` is in
  it: a later frame would have made a later snapshot), else its ``prev`` if
  ``prev.upto <= C`` (the snapshot was written but its commit did not
  happen), else nothing: the gap is logged and the source starts fresh.
  Another pipeline hash never matches. ``replay`` starts with empty state.

Values are numpy arrays or Python scalars; encoded as ``.npz``
(``allow_pickle=False``) behind a JSON header.

Ownership: ``_cond`` guards everything; image threads call :meth:`turn`,
the poll thread the rest.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import struct
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgstream.schema.records import TopicPartition

log = logging.getLogger(__name__)

#: One source's state: step key -> that step's values.
State = dict[str, dict[str, Any]]
Key = tuple[TopicPartition, str]
_HEADER = struct.Struct(">I")


@dataclass(frozen=True)
class Snapshot:
    """A source's state after its frame at offset ``last``, for the commit point ``upto``."""

    last: int
    upto: int
    state: State


@dataclass(frozen=True)
class StateRecord:
    """One source's snapshot record: the current one and the last committed one."""

    group: str
    pipeline: str
    tp: TopicPartition
    source: str
    cur: Snapshot
    prev: Snapshot | None

    def key(self) -> bytes:
        """The record's key (compaction keeps the last per key)."""
        return record_key(self.group, self.pipeline, self.tp, self.source)

    def choose(self, committed: int) -> Snapshot | None:
        """The snapshot as of the committed offset, or None (a gap)."""
        if self.cur.upto <= committed:
            return self.cur
        if self.prev is not None and self.prev.upto <= committed:
            return self.prev
        return None


def record_key(group: str, pipeline: str, tp: TopicPartition, source: str) -> bytes:
    """Group, pipeline hash, partition and source."""
    return json.dumps([group, pipeline, tp.topic, tp.partition, source]).encode("utf-8")


def encode_state_record(record: StateRecord) -> bytes:
    """A 4-byte header length, the JSON header, then the states as ``.npz``."""
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    _put(arrays, "cur", record.cur.state)
    if record.prev is not None:
        _put(arrays, "prev", record.prev.state)
    payload = io.BytesIO()
    np.savez(payload, **arrays)  # type: ignore[arg-type]
    header = {
        "v": 1,
        "kind": "state",
        "group": record.group,
        "pipeline": record.pipeline,
        "topic": record.tp.topic,
        "partition": record.tp.partition,
        "source": record.source,
        "cur": [record.cur.last, record.cur.upto],
        "prev": None if record.prev is None else [record.prev.last, record.prev.upto],
    }
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return _HEADER.pack(len(head)) + head + payload.getvalue()


def decode_state_record(value: bytes) -> StateRecord:
    """The inverse of :func:`encode_state_record`; ValueError for anything else."""
    try:
        (n,) = _HEADER.unpack_from(value)
        header = json.loads(value[4 : 4 + n])
        if not isinstance(header, dict) or header.get("kind") != "state" or header.get("v") != 1:
            raise ValueError("not a state record")
        with np.load(io.BytesIO(value[4 + n :]), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        tp = TopicPartition(str(header["topic"]), int(header["partition"]))
        cur = Snapshot(*_ints(header["cur"]), _get(arrays, "cur"))
        prev = None
        if header.get("prev") is not None:
            prev = Snapshot(*_ints(header["prev"]), _get(arrays, "prev"))
        return StateRecord(
            str(header["group"]), str(header["pipeline"]), tp, str(header["source"]), cur, prev
        )
    except (struct.error, KeyError, TypeError, ValueError, OSError) as exc:
        raise ValueError(f"not a state record: {exc}") from None


def _ints(pair: Any) -> tuple[int, int]:
    last, upto = pair
    if type(last) is not int or type(upto) is not int:
        raise ValueError("offsets must be integers")
    return last, upto


def _put(arrays: dict[str, np.ndarray[Any, Any]], prefix: str, state: State) -> None:
    for step, values in state.items():
        for name, value in values.items():
            arrays[f"{prefix}/{step}/{name}"] = np.asarray(value)


def _get(arrays: Mapping[str, np.ndarray[Any, Any]], prefix: str) -> State:
    state: State = {}
    for key, array in arrays.items():
        head, _, rest = key.partition("/")
        if head != prefix:
            continue
        step, _, name = rest.rpartition("/")
        state.setdefault(step, {})[name] = array.item() if array.ndim == 0 else array
    return state


def state_bytes(state: State) -> int:
    """Bytes of the arrays of a state (what a snapshot carries)."""
    return sum(np.asarray(v).nbytes for values in state.values() for v in values.values())


class SourceStates:
    """The states of one worker's sources, in order and versioned (see the module text)."""

    def __init__(self, group: str, pipeline: str) -> None:
        self.group = group
        self.pipeline = pipeline
        self._cond = threading.Condition()
        self._turns: dict[Key, deque[int]] = {}
        #: (offset of the frame, state after it), oldest first; the first may be
        #: the restored or last snapshotted state.
        self._versions: dict[Key, list[tuple[int, State]]] = {}
        #: The snapshot of the last commit that went through, per source.
        self._committed: dict[Key, Snapshot] = {}
        #: The last frame offset a snapshot was taken of, per source.
        self._snapped: dict[Key, int] = {}
        #: Moves on each :meth:`forget`: frames begun before it leave no version.
        self._epoch = 0

    # -- image threads ---------------------------------------------------------

    @contextlib.contextmanager
    def turn(self, key: Key, offset: int) -> Iterator[State]:
        """Wait for the frame's turn; yield its source's state (replace entries, do not
        change them: :meth:`~imgstream.ops.pipeline.Pipeline.run` does so).

        The turn ends when the block does; the state counts only if it exits
        without an exception (a failed frame leaves the state as it was).
        """
        with self._cond:
            self._cond.wait_for(lambda: self._head(key) == offset)
            versions = self._versions.get(key)
            state: State = dict(versions[-1][1]) if versions else {}
            epoch = self._epoch
        ok = False
        try:
            yield state
            ok = True
        finally:
            with self._cond:
                # A frame that started before its partition was forgotten (revoked,
                # rewound) must not add to the state restored since.
                if ok and epoch == self._epoch:
                    self._versions.setdefault(key, []).append((offset, state))
                self._pass(key, offset)

    def skip(self, key: Key, offset: int) -> None:
        """A frame that never reaches the pipeline (it failed before): pass its turn on."""
        with self._cond:
            self._cond.wait_for(lambda: self._head(key) == offset)
            self._pass(key, offset)

    def _head(self, key: Key) -> int | None:
        queue = self._turns.get(key)
        return queue[0] if queue else None

    def _pass(self, key: Key, offset: int) -> None:
        queue = self._turns[key]
        if queue and queue[0] == offset:
            queue.popleft()
        if not queue:
            del self._turns[key]
        self._cond.notify_all()

    # -- poll thread -----------------------------------------------------------

    def reserve(self, key: Key, offset: int) -> None:
        """A frame of ``key`` will run: its turn comes after those reserved before."""
        with self._cond:
            self._turns.setdefault(key, deque()).append(offset)

    def snapshot(self, due: Mapping[TopicPartition, int]) -> list[StateRecord]:
        """Records of the sources whose state moved below the commit points ``due``."""
        out = []
        with self._cond:
            for key, versions in self._versions.items():
                tp, source = key
                upto = due.get(tp)
                if upto is None:
                    continue
                below = [v for v in versions if v[0] < upto]
                if not below:
                    continue
                last, state = below[-1]
                if self._snapped.get(key, -1) >= last:
                    continue
                cur = Snapshot(last, upto, state)
                prev = self._committed.get(key)
                out.append(StateRecord(self.group, self.pipeline, tp, source, cur, prev))
        return out

    def committed(self, records: Iterable[StateRecord]) -> None:
        """The commit these records went before went through: they are the base now."""
        with self._cond:
            for record in records:
                key = (record.tp, record.source)
                self._committed[key] = record.cur
                self._snapped[key] = record.cur.last
                versions = self._versions.get(key, [])
                self._versions[key] = [v for v in versions if v[0] >= record.cur.last]

    def restore(
        self, records: Iterable[StateRecord], committed: Mapping[TopicPartition, int | None]
    ) -> int:
        """Partitions assigned: each source's state as of its partition's committed
        offset. Returns how many sources were restored."""
        n = 0
        with self._cond:
            for record in records:
                if record.group != self.group or record.pipeline != self.pipeline:
                    continue
                key = (record.tp, record.source)
                at = committed.get(record.tp)
                if at is None:  # nothing committed: every frame is to do, from no state
                    continue
                chosen = record.choose(at)
                if chosen is None:
                    log.warning(
                        "%s[%d] source %r: its last state snapshot (up to offset %d) does not "
                        "match the committed offset %s; starting it fresh",
                        record.tp.topic,
                        record.tp.partition,
                        record.source,
                        record.cur.upto,
                        at,
                    )
                    continue
                self._versions[key] = [(chosen.last, chosen.state)]
                self._committed[key] = chosen
                self._snapped[key] = chosen.last
                n += 1
        return n

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions revoked (or rewound): their states go; a new owner restores them."""
        gone = set(tps)
        with self._cond:
            self._epoch += 1
            for table in (self._versions, self._committed, self._snapped):
                for key in [k for k in table if k[0] in gone]:
                    del table[key]
