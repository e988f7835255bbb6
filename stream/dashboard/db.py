"""Opening the aggregator's SQLite store read-only, and refusing what is not one.

The dashboard never writes: every connection is opened with SQLite's
``mode=ro`` URI, so even a bug in a query cannot change the store the
aggregator is filling. A connection is made per request (cheap for SQLite;
a connection must not be shared across the server's threads mid-query).
"""

from __future__ import annotations

import os
import sqlite3
from urllib.parse import quote

from imgstream.errors import ConfigError

#: The tables (and their columns) that make a file an imgstream result store.
REQUIRED = {
    "records": {"id", "pipeline_hash", "kind", "source", "ts", "error_type", "parent", "record"},
    "accumulators": {"source", "window", "start", "data"},
}


def connect_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection to the SQLite file at ``path`` (never creates it)."""
    uri = "file:" + quote(os.path.abspath(path)) + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=5.0)
    db.execute("PRAGMA query_only = ON")
    return db


def check_store(path: str) -> None:
    """Raise ConfigError (one line naming --db) unless ``path`` is an imgstream store."""
    if not os.path.exists(path):
        raise ConfigError(f"--db {path}: no such file")
    if not os.path.isfile(path):
        raise ConfigError(f"--db {path}: not a file")
    try:
        db = connect_readonly(path)
        try:
            for table, columns in REQUIRED.items():
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                if not columns <= have:
                    raise ConfigError(
                        f"--db {path}: not an imgstream result store (no {table} table); "
                        "give the results.db that `imgstream run` or `imgstream aggregate` writes"
                    )
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"--db {path}: not an imgstream result store ({exc})") from None
