"""The ``dashboard`` command: serve the live web page over a result store."""

from __future__ import annotations

import sys
import threading

import click

from imgstream.cli.app import cli
from imgstream.errors import ConfigError


@cli.command()
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The result store (OUT/results.db of `imgstream run`, or `imgstream aggregate --db`).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="0: any free port.",
)
@click.option(
    "--metrics",
    "metrics",
    multiple=True,
    help="A worker's or a capture's /metrics URL (repeatable): throughput, latency and lag "
    "per scrape; camera health.",
)
@click.option(
    "--root",
    "roots",
    multiple=True,
    type=click.Path(file_okay=False, exists=True),
    help="A folder whose images may be shown (repeatable): inputs, or outputs stored "
    "outside the store's folder.",
)
def dashboard(
    db_path: str, host: str, port: int, metrics: tuple[str, ...], roots: tuple[str, ...]
) -> None:
    """Serve a read-only live web page over the result store; print its URL first."""
    from imgstream.cli.signals import stop_on_signals
    from imgstream.dashboard import build_server

    try:
        server = build_server(db_path, host, port, roots, metrics)
    except ValueError as exc:  # a --metrics URL that is not http(s)
        raise ConfigError(f"--metrics {exc}") from None
    click.echo(server.url)
    sys.stdout.flush()
    stop = stop_on_signals()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
