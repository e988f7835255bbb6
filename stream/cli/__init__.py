"""The ``imgstream`` command: one module per family of subcommands.

Importing this package registers every subcommand on :data:`cli`.
"""

from imgstream.cli import admin, capture, dashboard, ingest, process, results
from imgstream.cli.app import cli, main

__all__ = ["admin", "capture", "cli", "dashboard", "ingest", "main", "process", "results"]
