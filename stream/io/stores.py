"""Where refs are read from and outputs written to, chosen by scheme.

Two small protocols stand between the per-image work and storage:

* :class:`InputStore` ``read(uri) -> Loaded``: local paths and ``file://``
  URIs go to :class:`~imgstream.io.storage.SafeStore` (race-free, under local
  roots), ``s3://`` URIs to :class:`S3Inputs` (under ``s3://`` roots).
  :class:`Inputs` routes each reference by its scheme; a reference whose
  scheme has no root at all is ``forbidden``.
* :class:`OutputSink` ``write(location, data)``: :class:`LocalOutputs`
  writes files atomically, :class:`S3Outputs` PUTs whole objects. Both
  raise :class:`OSError` when the store (not the image) fails, for the
  :class:`~imgstream.io.outage.OutputGate` to retry.

Output locations are ``{out}/{pipeline_hash}/{source}/{id}.{ext}`` for both
(:func:`~imgstream.io.storage.output_path`), so a replay overwrites the same
file or key with the same bytes.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from typing import Protocol

from imgstream.errors import FORBIDDEN, TOO_LARGE, ImageError
from imgstream.io.objstore import ObjectStore, S3Url, is_s3, parse_s3
from imgstream.io.storage import DEFAULT_MAX_BYTES, Loaded, SafeStore, write_atomic


class InputStore(Protocol):
    """Reads the bytes a reference names (raises ImageError for bad refs)."""

    def read(self, uri: str) -> Loaded:
        """The bytes of ``uri``, bounded and checked."""
        ...


class OutputSink(Protocol):
    """Writes output bytes to a location (raises OSError when the store fails)."""

    def write(self, location: str, data: bytes) -> None:
        """Store ``data`` at ``location`` so readers see the old bytes or the new."""
        ...


def split_roots(roots: Sequence[str]) -> tuple[list[str], list[S3Url]]:
    """Local roots and ``s3://`` roots, apart (ConfigError-free: roots are checked in config)."""
    local = [r for r in roots if not is_s3(r)]
    remote = [parse_s3(r) for r in roots if is_s3(r)]
    return local, remote


class S3Inputs:
    """Reads ``s3://`` refs under ``s3://`` roots, bounded by ``max_bytes``."""

    def __init__(self, client: ObjectStore, roots: Sequence[S3Url], max_bytes: int) -> None:
        self.client = client
        self.roots = tuple(roots)
        self.max_bytes = max_bytes

    def check(self, uri: str) -> S3Url:
        """The URL of an allowed ref; ``forbidden`` outside every root."""
        url = parse_s3(uri)
        if not url.key:
            raise ImageError(FORBIDDEN, f"{uri} names a bucket, not an object")
        if not any(url.under(root) for root in self.roots):
            raise ImageError(FORBIDDEN, f"{uri} is outside the allowed roots")
        return url

    def read(self, uri: str) -> Loaded:
        """The object's bytes (``too_large`` before the body is read)."""
        url = self.check(uri)
        return Loaded(str(url), self.client.get(url, self.max_bytes))


class Inputs:
    """Routes each reference to the store of its scheme."""

    def __init__(
        self,
        roots: Sequence[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        allow_hardlinks: bool = False,
        client: ObjectStore | None = None,
    ) -> None:
        local, remote = split_roots(roots)
        self.local = SafeStore(local, max_bytes, allow_hardlinks) if local else None
        self.remote = (
            S3Inputs(client if client is not None else ObjectStore(), remote, max_bytes)
            if remote
            else None
        )

    def read(self, uri: str) -> Loaded:
        """The bytes of a reference, from the store its scheme names."""
        if is_s3(uri):
            if self.remote is None:
                raise ImageError(FORBIDDEN, f"{uri} is outside the allowed roots (no s3:// --root)")
            return self.remote.read(uri)
        if self.local is None:
            raise ImageError(FORBIDDEN, f"{uri} is outside the allowed roots (no local --root)")
        return self.local.read(uri)


class LocalOutputs:
    """Files, written atomically; with ``fsync`` (``--fsync``) the file and its directory
    entry are on disk before :meth:`write` returns, so a committed output survives a
    power loss (:func:`~imgstream.io.storage.write_atomic`)."""

    def __init__(self, fsync: bool = False) -> None:
        self.fsync = fsync

    def write(self, location: str, data: bytes) -> None:
        """Write the file at ``location`` (a path)."""
        write_atomic(location, data, fsync=self.fsync)


class S3Outputs:
    """Objects, each one whole PUT."""

    def __init__(self, client: ObjectStore) -> None:
        self.client = client

    def write(self, location: str, data: bytes) -> None:
        """PUT ``data`` at ``location`` (an ``s3://`` URI)."""
        self.client.put(parse_s3(location), data)


class Outputs:
    """Routes each output location to the sink of its scheme.

    The producer side (tiles, captured frames) and the aggregator (mosaics)
    also read back and upload the run's own files through it: those are not
    refs, so no roots apply.
    """

    def __init__(self, fsync: bool = False, client: ObjectStore | None = None) -> None:
        self.local = LocalOutputs(fsync)
        self.s3 = S3Outputs(client if client is not None else ObjectStore())

    def write(self, location: str, data: bytes) -> None:
        """Write ``data`` to a path or an ``s3://`` URI."""
        if is_s3(location):
            self.s3.write(location, data)
        else:
            self.local.write(location, data)

    def read(self, location: str, max_bytes: int) -> bytes:
        """The bytes at a path or ``s3://`` URI (OSError or ImageError when it cannot be read)."""
        if is_s3(location):
            return self.s3.client.get(parse_s3(location), max_bytes)
        with open(location, "rb") as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ImageError(TOO_LARGE, f"{location} is over the {max_bytes}-byte limit")
        return data

    def head(self, location: str, n: int) -> bytes:
        """The first ``n`` bytes at a path or ``s3://`` URI."""
        if is_s3(location):
            return self.s3.client.head_bytes(parse_s3(location), n)
        with open(location, "rb") as fh:
            return fh.read(n)

    def upload(self, location: str, local_path: str) -> None:
        """Move a finished local file to ``location`` (rename, or upload then delete)."""
        if is_s3(location):
            try:
                self.s3.client.put_file(parse_s3(location), local_path)
            finally:
                os.unlink(local_path)
            return
        os.makedirs(os.path.dirname(location), exist_ok=True)
        os.chmod(local_path, 0o644)
        os.replace(local_path, location)


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a directory or an ``s3://`` prefix."""
    if is_s3(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


#: Where ``run`` keeps its logs, records and result store when ``--out`` is an ``s3://`` URI.
LOCAL_RUN_DIR = "imgstream-run"


def local_dir(out: str) -> str:
    """The local folder for a run's logs and records: ``out`` itself, or
    ``./imgstream-run`` beside an ``s3://`` output."""
    return os.path.abspath(LOCAL_RUN_DIR) if is_s3(out) else out


def absolute(location: str) -> str:
    """A path made absolute; an ``s3://`` URI as it is."""
    return location if is_s3(location) else os.path.abspath(location)
