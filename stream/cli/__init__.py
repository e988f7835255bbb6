"""The ``imgstream`` command: one module per family of subcommands.

Importing this package registers every subcommand on :data:`cli`.
"""

from stream.cli import admin, ingest, process, results
from stream.cli.app import cli, main

__all__ = ["admin", "cli", "ingest", "main", "process", "results"]
