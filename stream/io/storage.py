"""Resolve and read image references under allowed roots; write outputs atomically.

A reference resolves only inside a configured root directory. Refused as
``forbidden``: ``..`` components, absolute paths outside every root, symlinks
whose target leaves the roots, anything that is not a regular file (a FIFO
must not hang a worker, so files are opened non-blocking and checked with
``fstat`` before reading), files with several hard links (a hard link inside
a root can name a file outside it; ``allow_hardlinks`` lifts this), and URI
schemes other than local files. Reads are bounded: a file over ``max_bytes``
is ``too_large`` before its content is read.

Race-freedom: a path is never checked and then opened by name. Each read
opens the root directory, then walks the reference one component at a time
with ``os.open(name, O_NOFOLLOW, dir_fd=parent)``, and reads the bytes from
the final descriptor after ``fstat`` has checked it. Another process that
swaps a directory for a symlink mid-read can only make the read fail
(``not_found``/``forbidden``), never redirect it. Symlinks inside the roots
are still followed, but by us and not by the kernel: the link text is read
with ``readlink(name, dir_fd=parent)`` and its components are walked the
same way from descriptors we already hold (``..`` pops back to the parent
descriptor and may never pop past the root; an absolute target must lie
under a root and restarts from that root). The roots themselves (and their
parent directories) are trusted configuration and are opened by name.
Every ``OSError`` becomes an ``ImageError`` (``not_found``, ``forbidden`` or
``io_error``); nothing else leaves :meth:`SafeStore.read`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from imgstream.errors import FORBIDDEN, IO_ERROR, NOT_FOUND, TOO_LARGE, ImageError

DEFAULT_MAX_BYTES = 64 << 20

#: Symlinks followed in one reference before it is refused (the kernel's own limit).
MAX_SYMLINKS = 40

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# O_PATH (Linux): directories on the way need search permission only, as with
# a lookup by path, not read permission.
_PATH = getattr(os, "O_PATH", os.O_RDONLY)
_DIR_FLAGS = _PATH | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# O_NOCTTY: a terminal device under a root must not become our controlling tty.
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | _CLOEXEC


@dataclass(frozen=True)
class Loaded:
    """The bytes of a reference and where they came from."""

    path: str
    data: bytes


class _NotHere(Exception):
    """The reference does not exist under this root: try the next one."""


class SafeStore:
    """Reads references under a set of roots, race-free (see the module docstring)."""

    def __init__(
        self,
        roots: Sequence[str | os.PathLike[str]],
        max_bytes: int = DEFAULT_MAX_BYTES,
        allow_hardlinks: bool = False,
    ) -> None:
        if not roots:
            raise ValueError("at least one root is needed")
        self.roots = tuple(os.path.realpath(r) for r in roots)
        # An absolute reference may name a root as configured (say through a
        # symlinked /tmp) or as resolved; both spellings map to the real root.
        aliases = [(os.path.abspath(r), real) for r, real in zip(roots, self.roots, strict=True)]
        aliases += [(real, real) for real in self.roots]
        self._aliases = tuple(sorted(set(aliases), key=lambda a: -len(a[0])))
        self.max_bytes = max_bytes
        self.allow_hardlinks = allow_hardlinks

    def _split_root(self, path: str) -> tuple[str, list[str]] | None:
        """(real root, components below it) for an absolute path under a root."""
        for alias, real in self._aliases:
            if path == alias or path.startswith(alias.rstrip(os.sep) + os.sep):
                rest = path[len(alias) :]
                return real, [p for p in rest.split("/") if p not in ("", ".")]
        return None

    def _candidates(self, uri: str) -> list[tuple[str, list[str]]]:
        """The (root, components) pairs a reference may name, in root order."""
        if "\x00" in uri:
            raise ImageError(FORBIDDEN, "reference contains a NUL character")
        path_text = uri
        parts = urlsplit(uri)
        if parts.scheme and len(parts.scheme) > 1:  # one letter would be a drive
            if parts.scheme != "file":
                raise ImageError(
                    FORBIDDEN,
                    f"URI scheme {parts.scheme!r} is not enabled (local files and s3:// only)",
                )
            if parts.netloc not in ("", "localhost"):
                raise ImageError(FORBIDDEN, f"file URI names a remote host {parts.netloc!r}")
            path_text = unquote(parts.path)
        path = PurePosixPath(path_text)
        if ".." in path.parts:
            raise ImageError(FORBIDDEN, f"'..' is not allowed in references: {uri}")
        if path.is_absolute():
            found = self._split_root(str(path))
            if found is None:
                raise ImageError(FORBIDDEN, f"{uri} is outside the allowed roots")
            return [found]
        return [(r, list(path.parts)) for r in self.roots]

    def resolve(self, uri: str) -> str:
        """The real path of a reference inside a root, or raise ImageError.

        Only for display: :meth:`read` never reopens this path by name.
        """
        real, fd = self._open(uri)
        os.close(fd)
        return real

    def read(self, uri: str) -> Loaded:
        """The bytes of a reference, bounded and checked; raise ImageError."""
        real, fd = self._open(uri)
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
        except OSError as exc:
            raise ImageError(IO_ERROR, f"cannot stat {uri}: {exc.strerror}") from None
        finally:
            os.close(fd)
        return Loaded(real, data)

    def _open(self, uri: str) -> tuple[str, int]:
        """(real path, open descriptor) of the file a reference names."""
        for root, parts in self._candidates(uri):
            try:
                return self._walk(uri, root, parts)
            except _NotHere:
                continue
        raise ImageError(NOT_FOUND, f"no such file under the allowed roots: {uri}")

    def _walk(self, uri: str, root: str, parts: list[str]) -> tuple[str, int]:
        """Open ``parts`` below ``root`` one component at a time, following links ourselves.

        ``stack`` holds the descriptors of the directories walked so far (the
        root first) and ``names`` their names below the root, so ``..`` in a
        link target is a pop and can never climb above the root.
        """
        stack: list[int] = []
        names: list[str] = []
        todo = list(reversed(parts))  # a stack: the next component is last
        links = 0
        try:
            stack.append(_open_root(root))
            if not todo:
                raise ImageError(FORBIDDEN, f"{uri} is a directory, not a regular file")
            while todo:
                name = todo.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(stack) == 1:
                        raise ImageError(
                            FORBIDDEN, f"{uri} resolves outside the allowed roots (symlink escape)"
                        )
                    os.close(stack.pop())
                    names.pop()
                    continue
                last = not todo
                try:
                    fd = os.open(name, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=stack[-1])
                except OSError as exc:
                    target = _link_target(exc, name, stack[-1], uri)
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise ImageError(FORBIDDEN, f"{uri}: too many levels of symlinks") from None
                    steps = [p for p in target.split("/") if p not in ("", ".")]
                    if target.startswith("/"):
                        found = self._split_root(target)
                        if found is None:
                            raise ImageError(
                                FORBIDDEN,
                                f"{uri} resolves outside the allowed roots (symlink escape)",
                            ) from None
                        # Restart from the root the absolute target names.
                        while stack:
                            os.close(stack.pop())
                        root, steps = found
                        names = []
                        stack.append(_open_root(root))
                    todo.extend(reversed(steps))
                    continue
                if last:
                    names.append(name)
                    return os.path.join(root, *names), fd
                stack.append(fd)
                names.append(name)
            # A trailing link or '..' resolved to a directory.
            raise ImageError(FORBIDDEN, f"{uri} is a directory, not a regular file")
        finally:
            for fd in stack:
                os.close(fd)


def _open_root(root: str) -> int:
    """A descriptor on a root directory (trusted: opened by name, following links)."""
    try:
        return os.open(root, _PATH | os.O_DIRECTORY | _CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise _NotHere from None
    except OSError as exc:
        raise ImageError(IO_ERROR, f"cannot open the root {root}: {exc.strerror}") from None


def _link_target(exc: OSError, name: str, parent: int, uri: str) -> str:
    """The target of ``name`` if opening it failed because it is a symlink, else raise.

    ``O_NOFOLLOW`` on a symlink fails with ELOOP (or ENOTDIR with
    ``O_DIRECTORY``); ``readlink`` on the same parent descriptor tells a link
    from a real non-directory without a second lookup by path.
    """
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        try:
            return os.readlink(name, dir_fd=parent)
        except OSError as again:
            if again.errno != errno.EINVAL:  # EINVAL: not a symlink (any more)
                exc = again
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        raise _NotHere from None
    if exc.errno in (errno.EACCES, errno.EPERM):
        raise ImageError(FORBIDDEN, f"permission denied: {uri}") from None
    if exc.errno == errno.ELOOP:
        raise ImageError(FORBIDDEN, f"{uri} changed while it was being opened") from None
    raise ImageError(IO_ERROR, f"cannot open {uri}: {exc.strerror}") from None


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
    """Write a file so readers see the old content or the new, never a mix.

    The temporary file, the rename and (with ``fsync``) the directory's sync all
    go through one descriptor of the directory, so a directory swapped by name
    meanwhile cannot take the write or the sync. With ``fsync`` the output
    survives a power loss once this returns: the bytes are synced before the
    rename, the directory after it (the rename is an entry in the directory),
    and so is the parent of every directory this call created.
    """
    directory, name = os.path.split(path)
    _makedirs(directory or ".", fsync)
    dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        tmp, fd = _temp_file(dir_fd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                os.fchmod(fh.fileno(), 0o644)
                if fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        if fsync:
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _temp_file(dir_fd: int) -> tuple[str, int]:
    """A new ``.tmp-*`` file in the directory (name, writable descriptor)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
    for _ in range(100):
        name = f".tmp-{secrets.token_hex(8)}"
        try:
            return name, os.open(name, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary file name")


def _makedirs(directory: str, fsync: bool) -> None:
    """``makedirs``; with ``fsync``, each new directory's entry is synced in its parent."""
    created = []
    missing = os.path.abspath(directory)
    while not os.path.isdir(missing):
        created.append(missing)
        parent = os.path.dirname(missing)
        if parent == missing:
            break
        missing = parent
    os.makedirs(directory, exist_ok=True)
    if fsync:
        for new in reversed(created):
            fsync_directory(os.path.dirname(new))


def fsync_directory(directory: str) -> None:
    """Make the entries of ``directory`` (created, renamed, removed files) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
