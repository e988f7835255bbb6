"""Offsets and groups: high-watermarks, committed offsets, offsets by time, members.

Everything here reads positions from real fetches: ``end_offsets()`` and
``offsets_for_times()`` are not reliable on every broker (the embedded one
answers both wrongly), so high-watermarks come from a fetch response and
offsets by time from a scan.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer
from kafka import TopicPartition as KTP
from kafka.structs import OffsetAndMetadata

from imgstream.errors import BrokerError
from imgstream.kafka_io.clients import new_admin, new_consumer
from imgstream.kafka_io.config.settings import ClientSettings, broker_errors


def fetch_highwaters(
    consumer: KafkaConsumer, tps: list[KTP], timeout_s: float = 10.0
) -> dict[KTP, int]:
    """High-watermarks from real fetches (``end_offsets()`` is unreliable on some brokers).

    The consumer must have ``tps`` assigned; records fetched here are discarded.
    """
    deadline = time.monotonic() + timeout_s
    marks: dict[KTP, int] = {}
    while time.monotonic() < deadline:
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None:
                marks[tp] = int(hw)
        if len(marks) == len(tps):
            return marks
        consumer.poll(timeout_ms=200, max_records=1)
    missing = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps if tp not in marks)
    raise BrokerError(f"no high-watermark for {missing} within {timeout_s:.0f}s")


def start_group_at_end(
    bootstrap: str, group: str, topic: str, settings: ClientSettings | None = None
) -> dict[int, int]:
    """Commit the current end of every partition for a new group; returns the offsets.

    ``imgstream run`` on a shared cluster uses it so its fresh group processes
    only the refs it is about to produce, not the topic's history.
    """
    ends = {st.partition: st.highwater for st in topic_state(bootstrap, topic, settings=settings)}
    commit_group_offsets(bootstrap, group, topic, ends, settings)
    return ends


@contextmanager
def _scanner(
    bootstrap: str, topic: str, group: str | None, settings: ClientSettings | None
) -> Iterator[tuple[KafkaConsumer, list[KTP]]]:
    """A consumer assigned every partition of ``topic``, at the beginning (no group join)."""
    consumer = new_consumer(
        bootstrap, settings, group_id=group, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    try:
        with broker_errors(bootstrap, settings):
            parts = sorted(consumer.partitions_for_topic(topic) or ())
        if not parts:
            raise BrokerError(f"topic {topic!r} does not exist")
        tps = [KTP(topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        yield consumer, tps
    finally:
        consumer.close(autocommit=False)


@dataclass(frozen=True)
class PartitionState:
    """One partition of a topic as a group sees it."""

    partition: int
    highwater: int
    committed: int | None
    #: Timestamp (ms) of the oldest message the group has not committed, if any.
    oldest_pending_ms: int | None = None

    @property
    def lag(self) -> int:
        """Messages between the committed offset and the high-watermark."""
        return max(0, self.highwater - (self.committed or 0))


def topic_state(
    bootstrap: str,
    topic: str,
    group: str | None = None,
    pending_ts: bool = False,
    settings: ClientSettings | None = None,
) -> list[PartitionState]:
    """High-watermarks (from fetches) and a group's committed offsets, per partition."""
    with (
        _scanner(bootstrap, topic, group, settings) as (consumer, tps),
        broker_errors(bootstrap, settings),
    ):
        marks = fetch_highwaters(consumer, tps)
        states = []
        for tp in tps:
            committed = consumer.committed(tp) if group is not None else None
            oldest = None
            if pending_ts and marks[tp] > (committed or 0):
                consumer.pause(*[t for t in tps if t != tp])
                consumer.resume(tp)
                consumer.seek(tp, committed or 0)
                deadline = time.monotonic() + 3
                while oldest is None and time.monotonic() < deadline:
                    for records in consumer.poll(timeout_ms=200, max_records=1).values():
                        oldest = records[0].timestamp
            states.append(PartitionState(tp.partition, marks[tp], committed, oldest))
        return states


def first_offsets_at(
    bootstrap: str, topic: str, when_ms: int, settings: ClientSettings | None = None
) -> dict[int, int]:
    """Per partition, the first offset whose message timestamp is >= ``when_ms``.

    Found by scanning, since ``offsets_for_times`` is not reliable on every
    broker; a partition with no such message maps to its high-watermark.
    """
    with (
        _scanner(bootstrap, topic, None, settings) as (consumer, tps),
        broker_errors(bootstrap, settings),
    ):
        marks = fetch_highwaters(consumer, tps)
        consumer.seek_to_beginning(*tps)
        found: dict[KTP, int] = {}
        open_tps = {tp for tp in tps if marks[tp] > 0}
        deadline = time.monotonic() + 120
        while open_tps and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                if tp not in open_tps:
                    continue
                for r in records:
                    if r.timestamp >= when_ms:
                        found[tp] = r.offset
                        break
                if tp in found or records[-1].offset + 1 >= marks[tp]:
                    open_tps.discard(tp)
                    consumer.pause(tp)
        return {tp.partition: found.get(tp, marks[tp]) for tp in tps}


def commit_group_offsets(
    bootstrap: str,
    group: str,
    topic: str,
    offsets: dict[int, int],
    settings: ClientSettings | None = None,
) -> None:
    """Set a group's committed offsets (the group should have no live members)."""
    consumer = new_consumer(bootstrap, settings, group_id=group, enable_auto_commit=False)
    try:
        with broker_errors(bootstrap, settings):
            tps = {KTP(topic, p): o for p, o in offsets.items()}
            consumer.assign(list(tps))
            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in tps.items()})
    finally:
        consumer.close(autocommit=False)


def group_members(
    bootstrap: str, group: str, settings: ClientSettings | None = None
) -> list[dict[str, Any]] | None:
    """Members of a group (``member``, ``client``, ``host``, ``partitions``), or None if the
    broker cannot say (it cannot answer DescribeGroups, or answers with an error).

    A group the broker does not know has no members.
    """
    admin = new_admin(bootstrap, settings, request_timeout_ms=5000)
    try:
        described = admin.describe_groups([group])
    except Exception:  # some brokers answer DescribeGroups in a form clients cannot parse
        return None
    finally:
        admin.close()
    return parse_members(described, group)


def parse_members(described: Any, group: str) -> list[dict[str, Any]] | None:
    """The members in kafka-python 3.x's ``describe_groups`` answer, or None if it holds an
    error other than "no such group".

    The answer is ``{group: {"members": [...], "error": None | str, ...}}``, each
    member a dict whose ``member_assignment`` is decoded (``assigned_partitions``).
    """
    found = described.get(group) if isinstance(described, dict) else None
    if not isinstance(found, dict):
        return None
    error = found.get("error")
    if error and "GroupIdNotFound" not in str(error):
        return None
    members: list[dict[str, Any]] = []
    for m in found.get("members") or []:
        assignment = m.get("member_assignment")
        owned = assignment.get("assigned_partitions") if isinstance(assignment, dict) else None
        members.append(
            {
                "member": m.get("member_id") or "",
                "client": m.get("client_id") or "",
                "host": (m.get("client_host") or "").lstrip("/"),
                "partitions": [
                    f"{entry['topic']}[{p}]"
                    for entry in owned or []
                    for p in sorted(entry.get("partitions") or [])
                ],
            }
        )
    return members
