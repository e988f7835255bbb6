"""The ``imgstream`` command group and its entry point.

Exceptions of :mod:`imgstream.errors` become their exit codes here and nowhere else.
"""

from __future__ import annotations

import sys

import click

from imgstream.cli.options import (
    setup_logging,
)
from imgstream.errors import ImgstreamError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def cli(verbose: int) -> None:
    """Streaming, micro-batching image processing on Kafka."""
    setup_logging(verbose)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn imgstream errors into exit codes."""
    try:
        cli.main(args=argv, prog_name="imgstream", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except ImgstreamError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
