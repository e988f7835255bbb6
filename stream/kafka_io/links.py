"""The state of this process's links to each Kafka broker: one line per outage, not a flood.

While a broker is down, kafka-python reconnects every ``reconnect_backoff_ms``
(up to a second) and logs each failed attempt, from each client of the
process. :class:`BrokerLinks` turns those events into what an operator
needs: one warning when the first link to a broker is lost, one line when a
link to it is up again (how long after it was lost, and how many attempts
failed meanwhile), whichever of the process's clients notices first. A client
connects only to the brokers it needs: once leadership has moved away from a
lost broker, the "connected again" line may come much later, or never.

It watches kafka-python's own connection events (``kafka.net.connection``:
"Connected", "Connection lost") through a logging filter, since kafka-python
has no connection listener; :func:`watch_broker_links` installs it once per
process. kafka-python's records then go on only if the user asked to see
kafka's logs (``-v``): the filter never widens what is shown.

Ownership: the filter runs on each client's I/O thread; ``_down`` and
``_address`` are guarded by ``_lock``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: kafka-python's logger whose records say a connection came up or was lost.
CONNECTION_LOGGER = "kafka.net.connection"
#: kafka-python 3.0's messages (format strings) for those events.
LOST = "%s: Connection lost: %s"
CONNECTED = "%s: Connected"


@dataclass
class _Outage:
    since: float
    attempts: int
    error: str


class BrokerLinks(logging.Filter):
    """Tracks links per broker from connection events; logs each outage once.

    ``clock`` gives seconds (monotonic); ``passes`` decides whether a
    kafka-python record goes on to the handlers.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        passes: Callable[[logging.LogRecord], bool] | None = None,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._passes = passes
        self._lock = threading.Lock()
        self._down: dict[str, _Outage] = {}
        self._address: dict[str, str] = {}
        #: Outages seen, and recoveries (for tests and metrics).
        self.outages = 0
        self.recoveries = 0

    def lost(self, broker: str, error: str) -> None:
        """A link to ``broker`` went down (or a reconnect failed)."""
        with self._lock:
            outage = self._down.get(broker)
            if outage is not None:
                outage.attempts += 1
                return
            self._down[broker] = _Outage(self._clock(), 1, error)
            self.outages += 1
            where = self._where(broker)
        log.warning(
            "lost the connection to Kafka broker %s%s (%s); reconnecting in the background",
            broker,
            where,
            error,
        )

    def connected(self, broker: str, address: str | None) -> None:
        """A link to ``broker`` is up."""
        with self._lock:
            if address:
                self._address[broker] = address
            outage = self._down.pop(broker, None)
            if outage is None:
                return
            self.recoveries += 1
            seconds = self._clock() - outage.since
            where = self._where(broker)
        log.warning(
            "connected to Kafka broker %s%s again, %.1f s after losing it (%d failed attempts)",
            broker,
            where,
            seconds,
            outage.attempts,
        )

    def down(self) -> list[str]:
        """The brokers whose link is down now."""
        with self._lock:
            return sorted(self._down)

    def _where(self, broker: str) -> str:
        address = self._address.get(broker)
        return f" at {address}" if address else ""

    def filter(self, record: logging.LogRecord) -> bool:
        """Note a connection event; pass the record on only if kafka's logs are wanted."""
        args: Any = record.args
        if record.msg in (LOST, CONNECTED) and isinstance(args, tuple) and args:
            broker = _broker(args[0])
            if broker is not None:
                if record.msg == LOST:
                    self.lost(broker, str(args[1]) if len(args) > 1 else "disconnected")
                else:
                    self.connected(broker, _address(args[0]))
        return self._passes(record) if self._passes is not None else True


def _broker(conn: Any) -> str | None:
    """The broker id of a connection: group coordinator links (``coordinator-N``) are
    broker N's; bootstrap links are set-up steps, not brokers a client depends on."""
    node = getattr(conn, "node_id", None)
    if node is None or str(node).startswith("bootstrap"):
        return None
    return str(node).removeprefix("coordinator-")


def _address(conn: Any) -> str | None:
    transport = getattr(conn, "transport", None)
    try:
        host, port = transport.getPeer()[0:2] if transport is not None else (None, None)
    except Exception:  # a transport without a peer: the address is only decoration
        return None
    return f"{host}:{port}" if host else None


def watch_broker_links() -> BrokerLinks:
    """Install the process's :class:`BrokerLinks` (once: later calls return it).

    kafka-python's connection logger is opened to INFO so the events reach the
    filter; its records still reach the handlers only at the level the
    ``kafka`` logger allows.
    """
    logger = logging.getLogger(CONNECTION_LOGGER)
    for existing in logger.filters:
        if isinstance(existing, BrokerLinks):
            return existing
    parent = logging.getLogger("kafka")

    def passes(record: logging.LogRecord) -> bool:
        return record.levelno >= parent.getEffectiveLevel()

    links = BrokerLinks(passes=passes)
    logger.addFilter(links)
    logger.setLevel(min(logging.INFO, parent.getEffectiveLevel()))
    return links
