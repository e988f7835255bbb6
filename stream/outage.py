"""OutputGate: output-store outages hold work back instead of dead-lettering it.

A write the output store refuses for a reason that is not the image's fault
(the disk is full, read-only, gone; the output folder was replaced by a file
or lost its permissions) must not become a failure record: committed, it
would lose the image for good. The image thread that hit it retries here with
back-off while the runner pauses fetching (the gate is :attr:`blocked`) and
commits nothing past the unwritten image. One log line and the
``imgstream_sink_blocked`` gauge mark each change of state, not each retry.
After ``max_outage_s`` (None: wait forever) :meth:`check` raises
:class:`~imgstream.errors.OutputOutageError`; :meth:`close` (shutdown) makes
every waiting write give up with
:class:`~imgstream.errors.OutputUnavailable`, so the image stays uncommitted.

Ownership: ``_since`` and ``_last_error`` are written by image threads under
``_lock``; the poll thread reads them in :meth:`check`.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable

from imgstream.clock import Clock
from imgstream.errors import OutputOutageError, OutputUnavailable

log = logging.getLogger(__name__)

#: errno values that say "the output store", not "this image".
INFRA_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EIO,
        errno.ENOTDIR,
        errno.EEXIST,  # makedirs over a file where the output folder should be
        errno.EACCES,
        errno.EPERM,
        errno.ENXIO,
        errno.ENODEV,
        errno.ESTALE,
        errno.ENOTCONN,
        errno.EHOSTDOWN,
        errno.ETIMEDOUT,
    }
)


def is_infrastructure(exc: OSError) -> bool:
    """True when an output write failed because of the store, not the image."""
    return exc.errno in INFRA_ERRNOS


class OutputGate:
    """Runs output writes, retrying infrastructure failures with back-off."""

    def __init__(
        self,
        clock: Clock,
        on_state: Callable[[bool], None] | None = None,
        max_outage_s: float | None = None,
        first_backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
    ) -> None:
        self.clock = clock
        self.max_outage_s = max_outage_s
        self._on_state = on_state
        self._first = first_backoff_s
        self._max = max_backoff_s
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._since: float | None = None
        self._last_error: OSError | None = None

    @property
    def blocked(self) -> bool:
        """True while the output store refuses writes."""
        return self._since is not None

    def write(self, path: str, write: Callable[[], None]) -> None:
        """Run ``write()``; retry it while the store is out; raise OSError for the image's own."""
        delay = self._first
        while True:
            try:
                write()
            except OSError as exc:
                if not is_infrastructure(exc):
                    raise
                self._block(path, exc)
                if self._closed.wait(delay):
                    raise OutputUnavailable(path, exc) from None
                delay = min(self._max, max(delay * 2, 0.01))
                continue
            self._unblock()
            return

    def _block(self, path: str, exc: OSError) -> None:
        with self._lock:
            first = self._since is None
            if first:
                self._since = self.clock.monotonic()
            self._last_error = exc
        if first:
            log.error(
                "output store unavailable (%s: %s); pausing and retrying",
                path,
                exc.strerror or exc,
            )
            if self._on_state is not None:
                self._on_state(True)

    def _unblock(self) -> None:
        with self._lock:
            was = self._since
            self._since = None
        if was is not None:
            log.warning("output store writable again after %.1fs", self.clock.monotonic() - was)
            if self._on_state is not None:
                self._on_state(False)

    def check(self, now: float | None = None) -> None:
        """Raise :class:`OutputOutageError` once an outage outlasts ``max_outage_s``."""
        since, limit = self._since, self.max_outage_s
        if since is None or limit is None:
            return
        if now is None:
            now = self.clock.monotonic()
        if now - since > limit:
            raise OutputOutageError(
                f"the output store has refused writes for {now - since:.0f}s "
                f"(over --max-outage {limit:g}s): {self._last_error}"
            )

    def close(self) -> None:
        """Make waiting writes give up (shutdown): their images stay uncommitted."""
        self._closed.set()
