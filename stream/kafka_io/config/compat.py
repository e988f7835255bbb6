"""Two fixes for kafka-python 3.0's networking, applied before imgstream makes a client.

kafka-python 3.0.x (3.0.12 checked) drops the bytes that arrive together with
the end of a connection: ``KafkaTCPTransport._read_from_sock`` reads until
``recv()`` returns nothing, and when it does, aborts the connection without
handing over what it read first. A broker that refuses a SASL password
answers ``SaslAuthenticate`` with the error *and* closes the connection (after
``connection.failed.authentication.delay.ms``), so the client only ever sees
"socket disconnected" and retries until its bootstrap timeout; the cause is
lost. :func:`apply` replaces that one method with one that delivers the bytes
first and closes the connection once whoever waited on them has run.

Second, ``KafkaNetSocket.connect`` leaves the socket of a refused connection
open until the garbage collector finds it: while a broker is down, every
reconnect attempt (each ``reconnect_backoff_ms``) leaks a descriptor and, in
the end, a ``ResourceWarning``. :func:`_connect` closes it.

Applied explicitly (no side effect at import), once, only to the 3.0 series
whose method it replaces.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import kafka
import kafka.errors as Errors
from kafka.net.inet import KafkaNetSocket
from kafka.net.transport import KafkaTCPTransport

log = logging.getLogger(__name__)

_PATCHED = "_imgstream_keeps_bytes_before_eof"


async def _read_from_sock(self: Any) -> None:
    """kafka-python's loop, except that bytes read before the end are delivered."""
    while self._read and not self._closed:
        await self._net.wait_read(self._sock)
        recvd_data, err = self._sock_recv()
        if recvd_data and self._protocol is not None:
            log.debug("%s: received %d bytes", self, len(recvd_data))
            self.last_read = time.monotonic()
            if self._protocol._sensors:
                self._protocol._sensors.bytes_received.record(len(recvd_data))
            try:
                self._protocol.data_received(recvd_data)
            except Errors.KafkaProtocolError as e:
                self.abort(error=e)
                return
        if err:
            if not recvd_data:
                self.abort(error=err)
                return
            # The coroutine waiting on those bytes (a SASL error, say) is queued
            # now: close after it has run, so its error is the one reported.
            self._read = False
            self._net.call_soon(lambda error=err: self.abort(error=error))
            return


async def _connect(
    self: Any, net: Any, addrinfo: Any, socket_options: Any = (), timeout_at: Any = None
) -> Any:
    """kafka-python's ``KafkaNetSocket.connect``, except that a failed socket is closed."""
    family, sock_type, proto, _canonname, sockaddr = addrinfo
    sock = self.socket(family, sock_type, proto)
    try:
        sock.setblocking(False)
        for option in socket_options:
            sock.setsockopt(*option)
        return await self.sock_connect(net, sock, sockaddr, timeout_at=timeout_at)
    except BaseException:
        sock.close()
        raise


def applies() -> bool:
    """Whether this kafka-python has the transport method the fix replaces."""
    version = getattr(kafka, "__version__", "")
    return (
        version.startswith("3.0.")
        and hasattr(KafkaTCPTransport, "_read_from_sock")
        and hasattr(KafkaNetSocket, "connect")
    )


def apply() -> None:
    """Install the fix (idempotent; nothing happens for other kafka-python versions)."""
    if getattr(KafkaTCPTransport, _PATCHED, False) or not applies():
        return
    KafkaTCPTransport._read_from_sock = _read_from_sock
    KafkaNetSocket.connect = _connect
    setattr(KafkaTCPTransport, _PATCHED, True)
