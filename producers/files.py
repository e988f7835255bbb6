"""Turn files, directories, globs and manifests into image refs.

An INPUT is a file, a directory (walked recursively, in sorted order), a
glob (``photos/**/*.jpg``), an ``s3://bucket/prefix`` (listed, see
:mod:`imgstream.producers.objects`), or a manifest ``@list.txt`` holding one
path or URI (``s3://...`` too) per line, or JSON lines of refs. Every
regular file found becomes a ref: deciding what is an image is the worker's
job (a non-image file becomes an ``unsupported_format`` failure, not a
silent skip). Paths that do not exist are reported through ``on_skip`` and skipped.

A ref's ``id`` is stable: the file's stem plus a hash of its absolute path,
size and modification time, so producing the same unchanged file twice gives
the same id (and the same output path), and a changed file a new one.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from imgstream.errors import ImageError
from imgstream.io.objstore import is_s3, parse_s3
from imgstream.io.storage import safe_name
from imgstream.producers.objects import folder, list_refs
from imgstream.schema.decoding import ref_from_dict
from imgstream.schema.records import ImageRef

Skip = Callable[[str, str], None]


@dataclass(frozen=True)
class Found:
    """A ref and the directory that should be a storage root for it."""

    ref: ImageRef
    root: str | None


def file_id(path: str, st: os.stat_result) -> str:
    """A stable id from the path, size and mtime; readable thanks to the stem."""
    digest = hashlib.sha1(
        f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()
    ).hexdigest()[:12]
    stem = safe_name(os.path.splitext(os.path.basename(path))[0])[:60]
    return f"{stem}-{digest}"


def ref_for_file(path: str, ts: int, source: str | None = None) -> ImageRef:
    """The ref of one local file (absolute path as its uri)."""
    st = os.stat(path)
    absolute = os.path.abspath(path)
    return ImageRef(
        id=file_id(absolute, st),
        uri=absolute,
        ts=ts,
        source=source if source is not None else os.path.basename(os.path.dirname(absolute)),
    )


def _walk(directory: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if os.path.isfile(path):
                yield path


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _glob_root(pattern: str) -> str:
    parts = []
    for part in pattern.split(os.sep):
        if _is_glob(part):
            break
        parts.append(part)
    base = os.sep.join(parts) or "."
    return os.path.abspath(base if os.path.isdir(base) else os.path.dirname(base) or ".")


def _manifest(path: str, ts: int, source: str | None, on_skip: Skip) -> Iterator[Found]:
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            where = f"{path}:{lineno}"
            if text.startswith("{"):
                try:
                    obj = json.loads(text)
                    if not isinstance(obj, dict):
                        raise ValueError("not an object")
                    ref = ref_from_dict(obj, ts)
                except (ValueError, ImageError) as exc:
                    on_skip(where, f"not a valid ref: {exc}")
                    continue
                if ref.source is None and source is not None:
                    ref = ImageRef(**{**ref.__dict__, "source": source})
                yield Found(ref, None)
                continue
            if "://" in text and not text.startswith("file://"):
                name = text.rsplit("/", 1)[-1] or text
                digest = hashlib.sha1(text.encode()).hexdigest()[:12]
                root = _object_root(text)
                yield Found(ImageRef(f"{safe_name(name)[:60]}-{digest}", text, ts, source), root)
                continue
            local = text[len("file://") :] if text.startswith("file://") else text
            local = local if os.path.isabs(local) else os.path.join(base, local)
            if not os.path.isfile(local):
                on_skip(where, f"no such file: {text}")
                continue
            yield Found(ref_for_file(local, ts, source), os.path.dirname(os.path.abspath(local)))


def _object_root(uri: str) -> str | None:
    """The "folder" of an ``s3://`` URI (a root for it); None for other schemes."""
    if not is_s3(uri):
        return None
    try:
        return str(folder(parse_s3(uri)))
    except ImageError:
        return None  # the worker refuses it, as a failure record


def expand_inputs(
    inputs: Iterable[str], ts: int, source: str | None = None, on_skip: Skip | None = None
) -> Iterator[Found]:
    """Every ref named by the inputs, in order; each file once."""
    skip: Skip = on_skip if on_skip is not None else (lambda where, why: None)
    seen: set[str] = set()

    def emit(path: str, root: str) -> Iterator[Found]:
        absolute = os.path.abspath(path)
        if absolute in seen:
            return
        seen.add(absolute)
        try:
            yield Found(ref_for_file(absolute, ts, source), root)
        except OSError as exc:
            skip(path, exc.strerror or str(exc))

    for item in inputs:
        if is_s3(item):
            for ref, root in list_refs(item, ts, source, skip):
                if ref.uri not in seen:
                    seen.add(ref.uri)
                    yield Found(ref, root)
        elif item.startswith("@"):
            manifest = item[1:]
            if not os.path.isfile(manifest):
                skip(item, "no such manifest file")
                continue
            for found in _manifest(manifest, ts, source, skip):
                if found.ref.uri in seen:
                    continue
                seen.add(found.ref.uri)
                yield found
        elif os.path.isdir(item):
            root = os.path.abspath(item)
            for path in _walk(item):
                yield from emit(path, root)
        elif os.path.isfile(item):
            yield from emit(item, os.path.dirname(os.path.abspath(item)))
        elif _is_glob(item):
            matches = sorted(glob.glob(item, recursive=True))
            files = [m for m in matches if os.path.isfile(m)]
            if not files:
                skip(item, "the pattern matches no files")
            root = _glob_root(item)
            for path in files:
                yield from emit(path, root)
        else:
            skip(item, "no such file or directory")
