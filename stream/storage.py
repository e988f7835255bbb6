"""Resolve and read image references under allowed roots; write outputs atomically.

A reference resolves only inside a configured root directory. Refused as
``forbidden``: ``..`` components, absolute paths outside every root, symlinks
whose target leaves the roots, anything that is not a regular file (a FIFO
must not hang a worker, so files are opened non-blocking and checked with
``fstat`` before reading), files with several hard links (a hard link inside
a root can name a file outside it; ``allow_hardlinks`` lifts this), and URI
schemes other than local files. Reads are bounded: a file over ``max_bytes``
is ``too_large`` before its content is read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from imgstream.errors import FORBIDDEN, IO_ERROR, NOT_FOUND, TOO_LARGE, ImageError

DEFAULT_MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class Loaded:
    """The bytes of a reference and where they came from."""

    path: str
    data: bytes


class SafeStore:
    """Reads references under a set of roots."""

    def __init__(
        self,
        roots: Sequence[str | os.PathLike[str]],
        max_bytes: int = DEFAULT_MAX_BYTES,
        allow_hardlinks: bool = False,
    ) -> None:
        if not roots:
            raise ValueError("at least one root is needed")
        self.roots = tuple(os.path.realpath(r) for r in roots)
        self.max_bytes = max_bytes
        self.allow_hardlinks = allow_hardlinks

    def _inside(self, real: str) -> bool:
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.roots)

    def resolve(self, uri: str) -> str:
        """The real path of a reference inside a root, or raise ImageError."""
        if "\x00" in uri:
            raise ImageError(FORBIDDEN, "reference contains a NUL character")
        path_text = uri
        parts = urlsplit(uri)
        if parts.scheme and len(parts.scheme) > 1:  # one letter would be a drive
            if parts.scheme != "file":
                raise ImageError(
                    FORBIDDEN, f"URI scheme {parts.scheme!r} is not enabled (local files only)"
                )
            if parts.netloc not in ("", "localhost"):
                raise ImageError(FORBIDDEN, f"file URI names a remote host {parts.netloc!r}")
            path_text = unquote(parts.path)
        path = Path(path_text)
        if ".." in path.parts:
            raise ImageError(FORBIDDEN, f"'..' is not allowed in references: {uri}")
        if path.is_absolute():
            candidates = [str(path)]
            if not any(
                str(path) == r or str(path).startswith(r.rstrip(os.sep) + os.sep)
                for r in self.roots
            ) and not self._inside(os.path.realpath(path)):
                raise ImageError(FORBIDDEN, f"{uri} is outside the allowed roots")
        else:
            candidates = [os.path.join(r, path) for r in self.roots]
        for candidate in candidates:
            if os.path.lexists(candidate):
                real = os.path.realpath(candidate)
                if not self._inside(real):
                    raise ImageError(
                        FORBIDDEN, f"{uri} resolves outside the allowed roots (symlink escape)"
                    )
                return real
        raise ImageError(NOT_FOUND, f"no such file under the allowed roots: {uri}")

    def read(self, uri: str) -> Loaded:
        """The bytes of a reference, bounded and checked; raise ImageError."""
        real = self.resolve(uri)
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        flags |= getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(real, flags)
        except FileNotFoundError:
            raise ImageError(NOT_FOUND, f"no such file: {uri}") from None
        except PermissionError:
            raise ImageError(FORBIDDEN, f"permission denied: {uri}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ImageError(FORBIDDEN, f"{uri} became a symlink while opening") from None
            raise ImageError(IO_ERROR, f"cannot open {uri}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                kind = _file_kind(st.st_mode)
                raise ImageError(FORBIDDEN, f"{uri} is a {kind}, not a regular file")
            if st.st_nlink > 1 and not self.allow_hardlinks:
                raise ImageError(
                    FORBIDDEN,
                    f"{uri} has {st.st_nlink} hard links (it may name a file outside the roots)",
                )
            if st.st_size > self.max_bytes:
                raise ImageError(
                    TOO_LARGE, f"{uri} is {st.st_size} bytes, over the {self.max_bytes} limit"
                )
            data = _read_bounded(fd, self.max_bytes, uri)
        finally:
            os.close(fd)
        return Loaded(real, data)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def _read_bounded(fd: int, limit: int, uri: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise ImageError(TOO_LARGE, f"{uri} grew past the {limit}-byte limit")
            chunks.append(chunk)
    except OSError as exc:
        raise ImageError(IO_ERROR, f"cannot read {uri}: {exc.strerror}") from None
    return b"".join(chunks)


_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(text: str) -> str:
    """A file-name-safe form of an id or source; a hash keeps altered names unique."""
    cleaned = _SAFE.sub("_", text).strip(".") or "_"
    if cleaned != text or len(cleaned) > 120:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        cleaned = f"{cleaned[:100]}-{digest}"
    return cleaned


def output_path(out_dir: str, pipeline_hash: str, source: str | None, ref_id: str, ext: str) -> str:
    """The deterministic output path ``{out}/{pipeline_hash}/{source}/{id}.{ext}``."""
    return os.path.join(
        out_dir, pipeline_hash, safe_name(source or "_"), f"{safe_name(ref_id)}.{ext}"
    )


def write_atomic(path: str, data: bytes, fsync: bool = False) -> None:
    """Write a file so readers see the old content or the new, never a mix."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
