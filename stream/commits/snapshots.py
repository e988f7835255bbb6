"""StateSnapshots: a stateful pipeline's states, written before each commit and read back.

The checkpoints call :meth:`StateSnapshots.records` with the commit points
they are about to commit; the records go to the state topic first
(at-least-once: :meth:`write`, acknowledged) or into the same transaction
(``--exactly-once``), and :meth:`committed` makes them the base once the
commit went through. On assignment :meth:`restore` reads the partitions'
records back into :class:`~imgstream.commits.state.SourceStates`.

A record larger than :data:`CLAIM_CHECK_BYTES` (the topic's message limit is
1 MB by default) is a *claim check*: its bytes go to the output store under
``{out}/{pipeline_hash}/.state/`` and the record on the topic points there.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Mapping, Sequence
from typing import Protocol

from imgstream.clock import Clock
from imgstream.commits.state import (
    SourceStates,
    StateRecord,
    decode_state_record,
    encode_state_record,
)
from imgstream.io.stores import Outputs
from imgstream.metrics import Metrics
from imgstream.schema.records import TopicPartition

log = logging.getLogger(__name__)

#: Records above this many bytes go to the output store, the topic holds a pointer.
CLAIM_CHECK_BYTES = 900_000
#: The largest claimed state read back.
MAX_STATE_BYTES = 1 << 30
_POINTER = b"imgstream-state-ref:"


class StateStore(Protocol):
    """The state topic (:class:`~imgstream.kafka_io.statestore.KafkaStateStore`)."""

    topic: str

    def write(self, records: Sequence[tuple[bytes, bytes]]) -> None: ...
    def load(self, tps: Sequence[TopicPartition]) -> list[bytes]: ...
    def close(self, timeout_s: float = 5.0) -> None: ...


class StateSnapshots:
    """Joins a worker's :class:`SourceStates` to the state topic."""

    def __init__(
        self,
        states: SourceStates,
        store: StateStore,
        outputs: Outputs,
        out_dir: str,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.states = states
        self.store = store
        self._outputs = outputs
        self._claims = posixpath.join(out_dir, states.pipeline, ".state")
        self._clock = clock
        self._metrics = metrics

    @property
    def topic(self) -> str:
        """The state topic."""
        return self.store.topic

    def records(self, due: Mapping[TopicPartition, int]) -> list[StateRecord]:
        """The snapshots to write before committing ``due``."""
        return self.states.snapshot(due)

    def encoded(self, records: Sequence[StateRecord]) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` of each record; a large one becomes a claim check."""
        out = []
        total = 0
        for record in records:
            value = encode_state_record(record)
            total += len(value)
            if len(value) > CLAIM_CHECK_BYTES:
                path = posixpath.join(
                    self._claims,
                    f"{record.tp.topic}-{record.tp.partition}",
                    f"{_safe(record.source)}-{record.cur.upto}.state",
                )
                self._outputs.write(path, value)
                value = _POINTER + json.dumps({"uri": path}).encode("utf-8")
            out.append((record.key(), value))
        if records:
            self._metrics.state_bytes.set(total)
        return out

    def write(self, records: Sequence[StateRecord]) -> None:
        """Write the records and wait for the broker (before an at-least-once commit)."""
        if records:
            self.store.write(self.encoded(records))

    def committed(self, records: Sequence[StateRecord]) -> None:
        """Their commit went through."""
        self.states.committed(records)

    def restore(
        self, tps: Sequence[TopicPartition], committed: Mapping[TopicPartition, int | None]
    ) -> int:
        """Read the partitions' records back; the sources restored."""
        started = self._clock.monotonic()
        records = []
        for value in self.store.load(tps):
            try:
                records.append(decode_value(value, self._outputs))
            except ValueError as exc:
                log.warning("skipping a state record on %s: %s", self.topic, exc)
        n = self.states.restore(records, committed)
        took = self._clock.monotonic() - started
        self._metrics.state_restore.observe(took)
        if n:
            log.info("restored the state of %d source(s) in %.3fs", n, took)
        return n

    def forget(self, tps: Sequence[TopicPartition]) -> None:
        """Partitions revoked or rewound."""
        self.states.forget(tps)


def load_claimed(value: bytes, outputs: Outputs) -> bytes:
    """A state record's bytes: itself, or what its claim check points to."""
    if not value.startswith(_POINTER):
        return value
    uri = json.loads(value[len(_POINTER) :])["uri"]
    return outputs.read(str(uri), MAX_STATE_BYTES)


def decode_value(value: bytes, outputs: Outputs) -> StateRecord:
    """A state topic value (a record or a claim check) -> the record; ValueError if neither."""
    try:
        data = load_claimed(value, outputs)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot read a claimed state: {exc}") from None
    return decode_state_record(data)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:100] or "_"
