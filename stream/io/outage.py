"""OutputGate: output-store outages hold work back instead of dead-lettering it.

A write the output store refuses for a reason that is not the image's fault
must not become a failure record: committed, it would lose the image for
good. Two kinds of refusal are told apart, per destination (the output
folder, or the object key's prefix):

- **The store as a whole** (full, over quota, read-only, I/O errors, gone):
  the image thread retries here with back-off for as long as it takes. While
  any write waits out such an outage the gate is :attr:`blocked`: the runner
  pauses fetching and commits nothing past the unwritten image. Writes that
  succeed meanwhile (a small file on a nearly full disk) do not end the
  outage; the outage ends when no write waits any more, so ``--max-outage``
  counts the whole of it.
- **One destination** (its folder was replaced by a file, or lost its
  permissions): the write is retried :data:`PATH_TRIES` times. If another
  destination took a write meanwhile, or the caller's *probe* (a small write
  at the top of the store: the pipeline's output folder) succeeds, the store
  works and this path does not: the OSError is raised, and the image becomes
  an ``io_error`` failure (later images to that destination fail after the
  same bounded retries, until a write there succeeds). Otherwise the whole
  store refuses writes (say ``out/`` lost its permissions): the write waits
  out an outage like the first kind, probing at each retry, and gives up
  once the probe or another destination succeeds.

One log line and the ``imgstream_sink_blocked`` gauge mark each change of the
gate's state; one line marks a destination that fails alone (and one its
recovery), never a line per retry. After ``max_outage_s`` (None: wait
forever) :meth:`check` raises :class:`~imgstream.errors.OutputOutageError`;
:meth:`close` (shutdown) makes every waiting write give up with
:class:`~imgstream.errors.OutputUnavailable`, so the image stays uncommitted.

Ownership: ``_waiting``, ``_since``, ``_last_error``, ``_successes`` and
``_bad`` are written by image threads under ``_lock``; the poll thread reads
``_since`` and ``_last_error`` in :meth:`check`.
"""

from __future__ import annotations

import errno
import logging
import posixpath
import threading
from collections.abc import Callable

from imgstream.clock import Clock
from imgstream.errors import OutputOutageError, OutputUnavailable

log = logging.getLogger(__name__)

#: errno values that say "the output store as a whole".
STORE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EIO,
        errno.ENXIO,
        errno.ENODEV,
        errno.ESTALE,
        errno.ENOTCONN,
        errno.EHOSTDOWN,
        errno.ETIMEDOUT,
    }
)
#: errno values that say "this output folder": the store's fault if every folder says it.
PATH_ERRNOS = frozenset(
    {
        errno.ENOTDIR,
        errno.EEXIST,  # makedirs over a file where the output folder should be
        errno.EACCES,
        errno.EPERM,
    }
)
#: errno values that say "the output store", not "this image".
INFRA_ERRNOS = STORE_ERRNOS | PATH_ERRNOS
#: Attempts at a write to a failing destination before it is judged alone.
PATH_TRIES = 4


def is_infrastructure(exc: OSError) -> bool:
    """True when an output write failed because of the store, not the image."""
    return exc.errno in INFRA_ERRNOS


def destination(path: str) -> str:
    """What one write shares its fate with: the output folder (or key prefix)."""
    return posixpath.dirname(path)


def _works(probe: Callable[[], None] | None) -> bool:
    """True when ``probe()`` writes: the store takes writes above a failing folder."""
    if probe is None:
        return False
    try:
        probe()
    except OSError:
        return False
    return True


class OutputGate:
    """Runs output writes, retrying infrastructure failures with back-off."""

    def __init__(
        self,
        clock: Clock,
        on_state: Callable[[bool], None] | None = None,
        max_outage_s: float | None = None,
        first_backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        path_tries: int = PATH_TRIES,
    ) -> None:
        self.clock = clock
        self.max_outage_s = max_outage_s
        self._on_state = on_state
        self._first = first_backoff_s
        self._max = max_backoff_s
        self._path_tries = path_tries
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._waiting = 0
        self._since: float | None = None
        self._last_error: OSError | None = None
        self._successes = 0
        self._bad: set[str] = set()

    @property
    def blocked(self) -> bool:
        """True while a write waits out an outage of the output store."""
        return self._since is not None

    def write(
        self, path: str, write: Callable[[], None], probe: Callable[[], None] | None = None
    ) -> None:
        """Run ``write()``: retry it while the store is out; raise OSError for this path's own.

        ``probe()`` writes somewhere above ``path`` in the same store (raising
        OSError if it cannot): it tells a folder failing alone from a store
        that refuses everything when no other write is under way.
        """
        dest = destination(path)
        delay = self._first
        tries = 0
        seen: int | None = None  # successes anywhere when this write first failed
        waiting = False
        try:
            while True:
                try:
                    write()
                except OSError as exc:
                    if not is_infrastructure(exc):
                        raise
                    tries += 1
                    if seen is None:
                        seen = self._successes
                    if exc.errno in STORE_ERRNOS:
                        wait = True
                    elif tries < self._path_tries:
                        wait = False
                    elif self._successes > seen or dest in self._bad or _works(probe):
                        self._alone(dest, exc)
                        raise
                    else:
                        wait = True
                    if wait and not waiting:
                        waiting = True
                        self._enter(path, exc)
                    self._last_error = exc
                    if self._closed.wait(delay):
                        raise OutputUnavailable(path, exc) from None
                    delay = min(self._max, max(delay * 2, 0.01))
                    continue
                self._succeeded(dest)
                return
        finally:
            if waiting:
                self._leave()

    def _enter(self, path: str, exc: OSError) -> None:
        with self._lock:
            self._waiting += 1
            first = self._since is None
            if first:
                self._since = self.clock.monotonic()
        if first:
            log.error(
                "output store unavailable (%s: %s); pausing and retrying",
                path,
                exc.strerror or exc,
            )
            if self._on_state is not None:
                self._on_state(True)

    def _leave(self) -> None:
        with self._lock:
            self._waiting -= 1
            was = self._since if self._waiting == 0 else None
            if was is not None:
                self._since = None
        if was is not None:
            log.warning("output store outage over after %.1fs", self.clock.monotonic() - was)
            if self._on_state is not None:
                self._on_state(False)

    def _alone(self, dest: str, exc: OSError) -> None:
        """A destination fails while the store takes other writes: its images fail."""
        with self._lock:
            new = dest not in self._bad
            self._bad.add(dest)
        if new:
            log.error(
                "output folder %s refuses writes (%s) while others succeed: "
                "its images fail as io_error until it works again",
                dest,
                exc.strerror or exc,
            )

    def _succeeded(self, dest: str) -> None:
        with self._lock:
            self._successes += 1
            healed = dest in self._bad
            self._bad.discard(dest)
        if healed:
            log.warning("output folder %s takes writes again", dest)

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
