"""Errors of imgstream.

Two kinds, kept apart on purpose:

* Errors that concern **one image or one message** are data: an
  :class:`ImageError` raised inside the per-image work is caught by the
  runner and becomes a ``failure`` record with a stable ``error.type``
  (one of :data:`FAILURE_TYPES`). Nothing else happens to the batch.
* Errors after which **the process cannot go on** are exceptions that
  reach the CLI edge, which turns each into its exit code::

    ImgstreamError                 exit 1
    ├── ConfigError                exit 2   bad flag, option or pipeline spec
    │   ├── SpecError                       unknown operation / parameter / value
    │   └── UnreliableTransactions          --exactly-once on a broker whose
    │                                       transactions cannot be trusted (Tansu)
    ├── BrokerError                exit 3   broker unreachable, embedded one failed
    ├── DeliveryError              exit 4   records could not be delivered; offsets
    │                                       were not committed past them
    ├── OutputOutageError          exit 5   the output store stayed unwritable for
    │                                       longer than --max-outage; nothing unwritten
    │                                       was committed
    └── StuckImagesError           exit 6   more image threads are stuck in an operation
                                            than the worker may replace

:func:`exit_codes` is the one table of every exit code (these and 0, 1, 2,
130) that ``imgstream --help`` and the documentation show.

:class:`OutputUnavailable` is not in the tree on purpose: it is raised by the
per-image work when the *output store* (not the image) fails, and the runner
answers it by pausing and retrying, never by a failure record.
:class:`TransactionFailed` (and its :class:`ProducerFenced`) are not in the
tree either: with ``--exactly-once`` a batch's transaction that could not be
committed is aborted, and the worker rewinds to its committed offsets and
does the work again.
"""

from __future__ import annotations

#: Stable failure types, the values of ``error.type`` in failure records.
BAD_MESSAGE = "bad_message"
NOT_FOUND = "not_found"
FORBIDDEN = "forbidden"
TOO_LARGE = "too_large"
UNSUPPORTED_FORMAT = "unsupported_format"
DECODE_ERROR = "decode_error"
OP_ERROR = "op_error"
IO_ERROR = "io_error"
INCOMPLETE = "incomplete"
STALE = "stale"
TIMEOUT = "timeout"
#: The worker process died (segfault, abort, OOM kill) each time it ran the image.
CRASHED = "crashed"

FAILURE_TYPES = (
    BAD_MESSAGE,
    NOT_FOUND,
    FORBIDDEN,
    TOO_LARGE,
    UNSUPPORTED_FORMAT,
    DECODE_ERROR,
    OP_ERROR,
    IO_ERROR,
    INCOMPLETE,
    STALE,
    TIMEOUT,
    CRASHED,
)


class ImageError(Exception):
    """One image (or message) could not be processed; becomes a failure record."""

    def __init__(self, type: str, message: str) -> None:
        if type not in FAILURE_TYPES:
            raise ValueError(f"unknown failure type {type!r}")
        super().__init__(message)
        self.type = type
        self.message = message


class ImgstreamError(Exception):
    """Base of the errors that stop the process."""

    exit_code = 1


class ConfigError(ImgstreamError):
    """A flag, option, environment variable or config value is invalid."""

    exit_code = 2


class SpecError(ConfigError):
    """A pipeline spec names an unknown operation or a bad parameter."""


class UnreliableTransactions(ConfigError):
    """``--exactly-once`` was asked of a broker whose transactions are unreliable.

    The embedded Tansu broker advertises the transaction APIs but does not keep
    their guarantees (aborted records are served to ``read_committed`` readers);
    exactly-once needs Apache Kafka.
    """


class BrokerError(ImgstreamError):
    """The broker cannot be reached or the embedded broker failed to start."""

    exit_code = 3


class DeliveryError(ImgstreamError):
    """Records could not be delivered to the broker even after recreating the producer."""

    exit_code = 4


class OutputOutageError(ImgstreamError):
    """The output store stayed full, unwritable or unreachable past ``--max-outage``."""

    exit_code = 5


class StuckImagesError(ImgstreamError):
    """Too many image threads are stuck in an operation to keep replacing them."""

    exit_code = 6


class OutputUnavailable(Exception):
    """The output store refused a write for a reason that is not the image's fault.

    Carries the ``OSError``; the runner pauses, retries and never commits the
    image as failed.
    """

    def __init__(self, path: str, error: OSError) -> None:
        super().__init__(f"cannot write {path}: {error.strerror or error}")
        self.path = path
        self.error = error


class TransactionFailed(Exception):
    """A batch's transaction was not committed; it was (or must be) aborted.

    Nothing of the batch is visible to ``read_committed`` readers and its
    offsets did not move: the worker rewinds to its committed offsets and
    processes the messages again. Raised by the transactional adapter
    (:mod:`imgstream.kafka_io.transactional`), handled by the transactional
    checkpoint; never reaches the CLI.
    """


class ProducerFenced(TransactionFailed):
    """The transactional producer was fenced (a newer one with its id, or a
    stale group generation): it cannot be used again and is recreated."""


#: Exit codes the command decides by itself, with no exception behind them.
EXIT_DONE = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def exit_codes() -> list[tuple[int, str, tuple[str, ...]]]:
    """The exit codes of every command: ``(code, meaning, error classes)``, by code.

    The one table: ``imgstream --help`` and the documentation render it. A
    code comes from the outcome (0, 1), from click's usage errors (2), from
    the :class:`ImgstreamError` subclasses above, which carry theirs (a class
    added here appears by itself, described by its docstring's first line),
    or from Ctrl-C (130).
    """
    rows: dict[int, tuple[str, list[str]]] = {
        EXIT_DONE: ("done: every input accounted for", []),
        EXIT_INCOMPLETE: (
            "incomplete: some inputs have no record or were not delivered; or a file error",
            [],
        ),
        EXIT_USAGE: ("usage: a bad flag, option, environment value or pipeline spec", []),
    }
    rows[EXIT_INCOMPLETE][1].append(ImgstreamError.__name__)
    for cls in _tree(ImgstreamError):
        doc = (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".").replace("``", "")
        _, names = rows.setdefault(cls.exit_code, (doc[0].lower() + doc[1:], []))
        names.append(cls.__name__)
    rows[EXIT_INTERRUPTED] = ("interrupted (Ctrl-C)", [])
    return [(code, text, tuple(names)) for code, (text, names) in sorted(rows.items())]


def _tree(cls: type[ImgstreamError]) -> list[type[ImgstreamError]]:
    """The subclasses of ``cls``, depth first, in definition order."""
    out: list[type[ImgstreamError]] = []
    for sub in cls.__subclasses__():
        out += [sub, *_tree(sub)]
    return out
