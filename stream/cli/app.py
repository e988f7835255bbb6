"""The ``imgstream`` command group and its entry point.

Every outcome becomes an exit code here and nowhere else
(:class:`ImgstreamGroup`): a command returns its code (0 done, 1
incomplete); click's usage errors carry 2; each :mod:`imgstream.errors`
exception carries its own; a client library error that escaped is a broker
error (3); a file error is one line. No traceback reaches the user for any
of them.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import click

from imgstream import errors
from imgstream.errors import ImgstreamError

INTERRUPTED = errors.EXIT_INTERRUPTED


def exit_codes_text() -> str:
    """The exit codes under ``imgstream --help``: the table of :func:`errors.exit_codes`."""
    lines = ["Exit codes:"]
    lines += [f"  {code:<4} {text}" for code, text, _classes in errors.exit_codes()]
    return "\n".join(lines)


def setup_logging(verbose: int) -> None:
    """Log to stderr; the Kafka client library stays silent unless -v (its own lines are noise
    next to the one-line errors imgstream prints)."""
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kafka_level = {0: logging.CRITICAL + 1, 1: logging.WARNING}.get(verbose, logging.DEBUG)
    logging.getLogger("kafka").setLevel(kafka_level)


class Redactor(logging.Filter):
    """Masks secret values (passwords from --kafka-config) in every record a handler writes.

    Passwords already print as ``***`` (:class:`~imgstream.kafka_io.config.properties.Secret`);
    this catches the copies a library makes, e.g. the SASL PLAIN token in kafka-python's
    debug log of requests.
    """

    def __init__(self) -> None:
        super().__init__()
        self.values: set[str] = set()

    def add(self, values: list[str]) -> None:
        """Mask these too (also as they appear inside a logged ``bytes`` value)."""
        for value in values:
            if value:
                self.values |= {value, repr(value.encode())[2:-1]}

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message and traceback without the secrets; keep it."""
        if not self.values:
            return True
        message = record.getMessage()
        text = self._mask(message)
        if text != message:
            record.msg, record.args = text, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        return True

    def _mask(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, "***")
        return text


def hide_in_logs(values: list[str]) -> None:
    """Keep ``values`` out of everything the root logger's handlers write."""
    if not values:
        return
    for handler in logging.getLogger().handlers:
        redactor = next((f for f in handler.filters if isinstance(f, Redactor)), None)
        if redactor is None:
            redactor = Redactor()
            handler.addFilter(redactor)
        redactor.add(values)


class ImgstreamGroup(click.Group):
    """A command group whose commands' outcomes become exit codes.

    A command returns its code (0 or None: done; 1: incomplete); an
    :class:`~imgstream.errors.ImgstreamError` carries its own; a client library
    error that escaped is a broker error; a file error is one line. click's
    standalone mode then prints and exits, so ``CliRunner`` sees the same codes.
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand and turn its outcome into an exit code."""
        try:
            rv = super().invoke(ctx)
        except ImgstreamError as exc:
            _fail(ctx, str(exc), exc.exit_code)
        except OSError as exc:
            # A file the user named cannot be read or written: one line.
            _fail(ctx, _os_error(exc), 1)
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", INTERRUPTED)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            from imgstream.kafka_io import as_broker_error

            broker = as_broker_error(exc)
            if broker is None:
                raise  # a bug: its traceback is what a report needs
            _fail(ctx, str(broker), broker.exit_code)
        if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
            ctx.exit(rv)
        return rv


def _fail(ctx: click.Context, message: str, code: int) -> NoReturn:
    """One line on stderr, then exit with ``code`` (click's Exit: CliRunner sees it too)."""
    click.echo(f"error: {message}", err=True)
    ctx.exit(code)


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


@click.group(
    cls=ImgstreamGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    # \b keeps the table's line breaks in click's help formatter
    epilog="\b\n" + exit_codes_text(),
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """Streaming, micro-batching image processing on Kafka."""
    setup_logging(verbose)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``imgstream`` command: exits with the code the command decided."""
    cli.main(args=argv, prog_name="imgstream")
