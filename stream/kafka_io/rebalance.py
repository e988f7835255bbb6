"""Rebalance callbacks that may commit: run off kafka-python's IO thread.

kafka-python 3.x drives the group protocol on its own IO thread and calls a
(synchronous) ``ConsumerRebalanceListener`` *on that thread*. A handler that
commits offsets before giving partitions up (as the runner's does: finish the
in-flight batch, flush the sink, commit) then calls a blocking consumer API from
the IO thread, which kafka-python refuses ("Cannot block on net.run() from the
IO thread itself"): the commit on revocation never happened and every
rebalance redelivered the work done since the last periodic commit.

:class:`GroupListener` is an ``AsyncConsumerRebalanceListener``: the
coordinator awaits it, it runs the handler on a short-lived thread and yields
to the event loop (heartbeats keep flowing) until the handler returns. The
thread that called ``poll()`` is blocked inside it meanwhile, so the handler
still runs alone, as it would inside ``poll()``.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from kafka import TopicPartition as KTP
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

from imgstream.schema.records import TopicPartition

#: How often the listener checks whether the handler's thread has finished.
_CHECK_S = 0.01


class RebalanceHandler(Protocol):
    """Told about partition revocation and assignment, while ``poll()`` blocks."""

    def on_revoked(self, tps: list[TopicPartition]) -> None: ...

    def on_assigned(self, tps: list[TopicPartition]) -> None: ...


def loop_sleep(consumer: Any) -> Callable[[float], Awaitable[None]]:
    """The ``sleep`` of the consumer's event loop (a kafka-python internal)."""
    sleep: Callable[[float], Awaitable[None]] = consumer._coordinator._net.sleep
    return sleep


class GroupListener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Hands rebalance events to ``handler`` on a thread of their own.

    Lost partitions (the member was evicted) are reported as revoked: the
    handler's commit then fails, which it already treats as "someone else owns
    these now". Newly assigned partitions are resumed first, so a pause made
    before the rebalance does not outlive it.
    """

    def __init__(
        self,
        handler: RebalanceHandler,
        sleep: Callable[[float], Awaitable[None]],
        resume: Callable[[list[KTP]], None],
    ) -> None:
        self.handler = handler
        self._sleep = sleep
        self._resume = resume

    async def on_partitions_revoked(self, revoked: Iterable[KTP]) -> None:
        await self._off_loop(self.handler.on_revoked, _ours(revoked))

    async def on_partitions_lost(self, lost: Iterable[KTP]) -> None:
        await self._off_loop(self.handler.on_revoked, _ours(lost))

    async def on_partitions_assigned(self, assigned: Iterable[KTP]) -> None:
        assigned = list(assigned)
        self._resume(assigned)
        await self._off_loop(self.handler.on_assigned, _ours(assigned))

    async def _off_loop(
        self, call: Callable[[list[TopicPartition]], None], tps: list[TopicPartition]
    ) -> None:
        done = threading.Event()
        raised: list[BaseException] = []

        def target() -> None:
            try:
                call(tps)
            except BaseException as exc:  # re-raised on the loop, as kafka-python expects
                raised.append(exc)
            finally:
                done.set()

        threading.Thread(target=target, name="imgstream-rebalance", daemon=True).start()
        while not done.is_set():
            await self._sleep(_CHECK_S)
        if raised:
            raise raised[0]


def _ours(tps: Iterable[KTP]) -> list[TopicPartition]:
    return sorted(TopicPartition(tp.topic, tp.partition) for tp in tps)
