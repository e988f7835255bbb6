"""Settings of the topics imgstream creates, by their role (pure: no Kafka, no environment).

imgstream creates five kinds of topic when they are missing, and each role
wants different broker-side settings (Kafka's topic-level configs):

- ``refs``: the input; kept :data:`REFS_RETENTION_MS` (7 days) so a new
  pipeline can replay it;
- ``results``: result and batch records; ``cleanup.policy=delete`` (never
  compacted: several records share a key, and compaction would drop all but
  the last);
- ``dlq``: failures; kept :data:`DLQ_RETENTION_MS` (30 days), long enough for
  someone to look at them;
- ``attempts``: start counts of uncommitted images (crash isolation);
  ``cleanup.policy=compact``: only the last record of each key matters;
- ``state``: per-source state snapshots of stateful pipelines; compacted too.

The user overrides any of these the way ``kafka-topics.sh --config`` does,
with ``[ROLE:]key=value`` items (``--topic-config``, repeatable; no role means
every role), and chooses the replication factor (``--replication-factor``;
default: the broker's ``default.replication.factor``). Topics that exist
already are never altered. :func:`parse_topic_configs` checks the items and
raises :class:`~imgstream.errors.ConfigError` naming the flag.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from imgstream.errors import ConfigError

#: The roles of imgstream's topics.
ROLES = ("refs", "results", "dlq", "attempts", "state")

DAY_MS = 24 * 60 * 60 * 1000
#: How long the refs topic keeps refs (replay needs history): 7 days.
REFS_RETENTION_MS = 7 * DAY_MS
#: How long the dead-letter topic keeps failures: 30 days.
DLQ_RETENTION_MS = 30 * DAY_MS

#: The topic configs each role gets unless the user says otherwise.
ROLE_DEFAULTS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "refs": {"cleanup.policy": "delete", "retention.ms": str(REFS_RETENTION_MS)},
        "results": {"cleanup.policy": "delete"},
        "dlq": {"cleanup.policy": "delete", "retention.ms": str(DLQ_RETENTION_MS)},
        "attempts": {"cleanup.policy": "compact"},
        "state": {"cleanup.policy": "compact"},
    }
)

#: Apache Kafka 4.x topic-level config names (``kafka-configs.sh --entity-type topics``).
TOPIC_CONFIG_NAMES = frozenset(
    {
        "cleanup.policy",
        "compression.gzip.level",
        "compression.lz4.level",
        "compression.type",
        "compression.zstd.level",
        "delete.retention.ms",
        "file.delete.delay.ms",
        "flush.messages",
        "flush.ms",
        "follower.replication.throttled.replicas",
        "index.interval.bytes",
        "leader.replication.throttled.replicas",
        "local.retention.bytes",
        "local.retention.ms",
        "max.compaction.lag.ms",
        "max.message.bytes",
        "message.timestamp.after.max.ms",
        "message.timestamp.before.max.ms",
        "message.timestamp.type",
        "min.cleanable.dirty.ratio",
        "min.compaction.lag.ms",
        "min.insync.replicas",
        "preallocate",
        "remote.log.copy.disable",
        "remote.log.delete.on.disable",
        "remote.storage.enable",
        "retention.bytes",
        "retention.ms",
        "segment.bytes",
        "segment.index.bytes",
        "segment.jitter.ms",
        "segment.ms",
        "unclean.leader.election.enable",
    }
)

FLAG = "--topic-config"


@dataclass(frozen=True)
class TopicSettings:
    """How imgstream creates a missing topic: replication factor and per-role configs."""

    #: Replicas per partition; None: the broker's ``default.replication.factor``.
    replication_factor: int | None = None
    #: The user's configs by role, applied over :data:`ROLE_DEFAULTS`.
    overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def configs(self, role: str | None) -> dict[str, str]:
        """The topic configs of a topic of ``role`` (None: no role, only the user's '*' ones)."""
        if role is not None and role not in ROLES:
            raise ValueError(f"unknown topic role {role!r}; roles: {', '.join(ROLES)}")
        out: dict[str, str] = dict(ROLE_DEFAULTS[role]) if role else {}
        out.update(self.overrides.get(role or "", {}))
        return out

    @property
    def replicas(self) -> int:
        """The CreateTopics replication factor: -1 asks for the broker's default."""
        return -1 if self.replication_factor is None else self.replication_factor


def parse_topic_configs(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """``[ROLE:]key=value`` items -> role -> {key: value}; no role sets every role.

    Raises ConfigError naming ``--topic-config`` for an unknown role or key,
    or an item without ``=``. Later items win.
    """
    out: dict[str, dict[str, str]] = {}
    for item in items:
        where = f"{FLAG} {item!r}"
        head, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(
                f"{where}: expected [ROLE:]key=value, e.g. refs:retention.ms=86400000"
            )
        role, colon, key = head.partition(":")
        if not colon:
            role, key = "", head
        role, key, value = role.strip(), key.strip(), value.strip()
        if colon and role not in ROLES:
            raise ConfigError(f"{where}: unknown role {role!r}; roles: {', '.join(ROLES)}")
        if key not in TOPIC_CONFIG_NAMES:
            close = difflib.get_close_matches(key, TOPIC_CONFIG_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: {key!r} is not a Kafka topic config{hint}")
        if not value:
            raise ConfigError(f"{where}: the value is empty")
        for r in (role,) if role else ("", *ROLES):
            out.setdefault(r, {})[key] = value
    return out


def topic_settings(items: Iterable[str], replication_factor: int | None) -> TopicSettings:
    """TopicSettings from ``--topic-config`` items and ``--replication-factor``."""
    if replication_factor is not None and replication_factor < 1:
        raise ConfigError("--replication-factor must be at least 1")
    return TopicSettings(replication_factor, parse_topic_configs(items))
