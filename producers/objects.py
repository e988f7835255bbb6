"""Turn ``s3://bucket/prefix`` inputs into refs: list the prefix, one ref per object.

Like a local directory, a prefix is listed recursively in key order and
every object becomes a ref (deciding what is an image is the worker's job);
``s3://bucket/key`` naming one object gives that object. The prefix listed
(or the object's "folder") is the storage root the workers need.

An object's ``id`` is stable: its key's stem plus a hash of its URI, size
and ETag, so producing an unchanged object twice gives the same id (and the
same output key), and a rewritten one a new id.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Iterator

from imgstream.errors import ImageError
from imgstream.io.objstore import ObjectInfo, ObjectStore, S3Url, parse_s3
from imgstream.io.storage import safe_name
from imgstream.schema.records import ImageRef

Skip = Callable[[str, str], None]


def object_id(info: ObjectInfo) -> str:
    """A stable id from the URI, size and ETag; readable thanks to the key's stem."""
    text = f"{info.url}|{info.size}|{info.etag}"
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    stem = safe_name(posixpath.splitext(posixpath.basename(info.url.key))[0])[:60]
    return f"{stem}-{digest}"


def default_source(url: S3Url) -> str:
    """The object's "folder" name (the bucket's for a top-level key), as for local files."""
    parent = posixpath.dirname(url.key)
    return posixpath.basename(parent) if parent else url.bucket


def folder(url: S3Url) -> S3Url:
    """The prefix an object sits in (its storage root)."""
    return S3Url(url.bucket, posixpath.dirname(url.key))


def ref_for_object(info: ObjectInfo, ts: int, source: str | None = None) -> ImageRef:
    """The ref of one listed object."""
    return ImageRef(
        id=object_id(info),
        uri=str(info.url),
        ts=ts,
        source=source if source is not None else default_source(info.url),
    )


def list_refs(
    uri: str,
    ts: int,
    source: str | None,
    on_skip: Skip,
    client: ObjectStore | None = None,
) -> Iterator[tuple[ImageRef, str]]:
    """(ref, root) for every object under ``uri``, or the one object ``uri`` names."""
    try:
        prefix = parse_s3(uri)
        store = client if client is not None else ObjectStore()
        objects = [o for o in store.list(prefix) if not o.url.key.endswith("/")]
        root = prefix
        if not objects and prefix.key:
            size = store.size(prefix)  # not a prefix: perhaps one object
            objects = [ObjectInfo(prefix, size, "", 0)]
            root = folder(prefix)
    except ImageError as exc:
        on_skip(uri, exc.message)
        return
    if not objects:
        on_skip(uri, "no objects under this prefix")
        return
    for info in objects:
        yield ref_for_object(info, ts, source), str(root)
