"""The object store (``s3://bucket/key``): the one module that owns the S3 client.

Everything imgstream reads from or writes to S3 (and S3-compatible stores:
MinIO, Ceph, R2, ...) goes through :class:`ObjectStore`, built on obstore
(the Rust ``object_store`` crate): it was chosen by measurement
(``benchmarks/bench_objstore.py``) for its cheap reused connections and its
GIL-free calls, which let a worker's image threads fetch a batch in parallel.

Credentials and endpoint come the standard AWS way
(:func:`imgstream.io.awsconfig.aws_settings`):
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, then the
shared credentials and config files (``AWS_PROFILE``,
``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_CONFIG_FILE``), then the instance or
container credentials obstore finds itself; the region from ``AWS_REGION``,
``AWS_DEFAULT_REGION`` or the config file; the endpoint from
``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or the profile's
``endpoint_url`` (path-style requests, so any S3-compatible store works).
``AWS_MAX_ATTEMPTS`` bounds the attempts of one request. An endpoint that is
not an ``http(s)://host[:port][/path]`` URL is refused before any request
(:func:`~imgstream.io.awsconfig.check_endpoint` at start-up, naming the setting it came from; an
``io_error`` per image after that): object_store panics on some of them.

Errors are mapped once, here (:func:`image_error`): a missing key is
``not_found``, access denied ``forbidden``, and throttling, 5xx answers and
timeouts are retried with exponential back-off (obstore's retry loop) and
then ``io_error``; so is anything else the client raises, pyo3's
``PanicException`` (a :class:`BaseException`) included: only an interrupt or
an exit goes on up. Writes raise :class:`OSError` instead (with an errno the
:class:`~imgstream.io.outage.OutputGate` treats as an outage), since a store that
refuses an output is not the image's fault.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from imgstream.errors import FORBIDDEN, IO_ERROR, NOT_FOUND, TOO_LARGE, ImageError
from imgstream.io.awsconfig import attempts, endpoint_error, resolve

SCHEME = "s3://"

#: S3 bucket names (with the legacy upper case and underscores some stores still allow):
#: nothing that could change the request's path or query.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def is_s3(text: str) -> bool:
    """True for an ``s3://`` URI."""
    return text[:5].lower() == SCHEME


@dataclass(frozen=True)
class S3Url:
    """A bucket and a key (the key may be empty or a prefix)."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}" if self.key else f"{SCHEME}{self.bucket}"

    def child(self, relative: str) -> S3Url:
        """The URL of ``relative`` below this prefix."""
        key = f"{self.key}/{relative}" if self.key else relative
        return S3Url(self.bucket, key)

    def under(self, root: S3Url) -> bool:
        """True when this key is the root's prefix or below it (whole segments)."""
        if self.bucket != root.bucket:
            return False
        return not root.key or self.key == root.key or self.key.startswith(root.key + "/")


def parse_s3(uri: str) -> S3Url:
    """Split ``s3://bucket/key``; ``forbidden`` for keys with ``..``, ``.`` or empty segments.

    A key is taken literally (no percent-decoding), as the AWS CLI does. A
    trailing ``/`` (a prefix written as a folder) is dropped.
    """
    if not is_s3(uri):
        raise ImageError(FORBIDDEN, f"not an s3:// URI: {uri}")
    if "\x00" in uri:
        raise ImageError(FORBIDDEN, "reference contains a NUL character")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ImageError(FORBIDDEN, f"not a valid bucket name in {uri!r}")
    key = key.rstrip("/")
    if key:
        segments = key.split("/")
        if ".." in segments:
            raise ImageError(FORBIDDEN, f"'..' is not allowed in references: {uri}")
        if "." in segments or "" in segments:
            raise ImageError(FORBIDDEN, f"empty or '.' segments are not allowed in keys: {uri}")
    return S3Url(bucket, key)


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object."""

    url: S3Url
    size: int
    etag: str
    mtime_ns: int


#: What a store call lets through untouched: the process is being stopped, not failing.
_STOPS = (KeyboardInterrupt, SystemExit, GeneratorExit)


def image_error(exc: BaseException, url: S3Url | str) -> ImageError:
    """The failure type of an obstore error: not_found, forbidden, else io_error."""
    from obstore import exceptions as obx

    text = str(exc)
    if "NoSuchBucket" in text:
        return ImageError(NOT_FOUND, f"no such bucket: {url}")
    # obstore raises the builtin FileNotFoundError for a missing key (NotFoundError is
    # deprecated), and ValueError for a path it will not send.
    if isinstance(exc, FileNotFoundError):
        return ImageError(NOT_FOUND, f"no such object: {url}")
    if isinstance(exc, (obx.PermissionDeniedError, obx.UnauthenticatedError)):
        return ImageError(FORBIDDEN, f"access denied to {url}")
    if isinstance(exc, obx.InvalidPathError):
        return ImageError(FORBIDDEN, f"not a valid object key: {url}")
    if "403 Forbidden" in text or "AccessDenied" in text:
        return ImageError(FORBIDDEN, f"access denied to {url}")
    return ImageError(IO_ERROR, f"object store error on {url}: {_first_line(text)}")


def os_error(exc: BaseException, url: S3Url) -> OSError:
    """The OSError of a failed write (errnos the output gate retries as an outage)."""
    error = image_error(exc, url)
    code = {FORBIDDEN: errno.EACCES, NOT_FOUND: errno.ENXIO}.get(error.type, errno.EIO)
    return OSError(code, error.message, str(url))


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line[:300]


class ObjectStore:
    """S3 reads, writes and listings with one reused client per bucket (thread-safe).

    ``timeout_s`` bounds one request (connect to last byte); retries follow
    ``AWS_MAX_ATTEMPTS`` with exponential back-off from ``first_backoff_s`` to
    ``max_backoff_s``.

    Ownership: ``_clients`` is shared by the image threads and guarded by
    ``_lock``; each obstore client is itself thread-safe (a connection pool).
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        first_backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
    ) -> None:
        env = os.environ if environ is None else environ
        self.settings, source = resolve(env)
        self._endpoint_error = endpoint_error(self.settings, source)
        self.attempts = attempts(env)
        self._timeout = timeout_s
        self._connect_timeout = connect_timeout_s
        self._backoff = (first_backoff_s, max_backoff_s)
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    @property
    def endpoint(self) -> str | None:
        """The endpoint URL in use (None: AWS's regional endpoint)."""
        return self.settings.get("endpoint")

    def _client(self, bucket: str) -> Any:
        with self._lock:
            client = self._clients.get(bucket)
            if client is None:
                client = self._clients[bucket] = self._make(bucket)
            return client

    def _make(self, bucket: str) -> Any:
        from obstore.store import S3Store

        if self._endpoint_error is not None:  # object_store would panic on it in a request
            raise ImageError(
                IO_ERROR, f"cannot configure S3 for {bucket!r}: {self._endpoint_error}"
            )
        settings = dict(self.settings)
        options: dict[str, Any] = {
            "timeout": timedelta(seconds=self._timeout),
            "connect_timeout": timedelta(seconds=self._connect_timeout),
        }
        if settings.get("endpoint", "").lower().startswith("http://"):
            options["allow_http"] = True
        settings.setdefault("region", "us-east-1")
        first, most = self._backoff
        retry = {
            "max_retries": self.attempts - 1,
            "retry_timeout": timedelta(seconds=max(self._timeout, 1.0) * self.attempts),
            "backoff": {
                "init_backoff": timedelta(seconds=first),
                "max_backoff": timedelta(seconds=most),
                "base": 2,
            },
        }
        try:
            return S3Store(
                bucket,
                config=settings,  # type: ignore[arg-type]
                client_options=options,  # type: ignore[arg-type]
                retry_config=retry,  # type: ignore[arg-type]
                virtual_hosted_style_request=False,
            )
        except _STOPS:
            raise
        except BaseException as exc:  # bad settings: every ref of this bucket fails alike
            raise ImageError(IO_ERROR, f"cannot configure S3 for {bucket!r}: {exc}") from None

    def size(self, url: S3Url) -> int:
        """The object's size in bytes (HEAD); raise ImageError."""
        import obstore

        try:
            meta = obstore.head(self._client(url.bucket), url.key)
        except (ImageError, *_STOPS):
            raise
        except BaseException as exc:  # pyo3's PanicException too
            raise image_error(exc, url) from None
        return int(meta["size"])

    def get(self, url: S3Url, max_bytes: int) -> bytes:
        """The object's bytes; ``too_large`` from the response length before the body is read."""
        import obstore

        if not url.key:
            raise ImageError(FORBIDDEN, f"{url} names a bucket, not an object")
        try:
            result = obstore.get(self._client(url.bucket), url.key)
            size = int(result.meta["size"])
            if size > max_bytes:
                raise ImageError(TOO_LARGE, f"{url} is {size} bytes, over the {max_bytes} limit")
            data = bytes(result.bytes())
        except (ImageError, *_STOPS):
            raise
        except BaseException as exc:  # pyo3's PanicException too
            raise image_error(exc, url) from None
        if len(data) > max_bytes:  # a store that lied about the length
            raise ImageError(TOO_LARGE, f"{url} grew past the {max_bytes}-byte limit")
        return data

    def put(self, url: S3Url, data: bytes) -> None:
        """Store ``data`` at ``url`` (a whole-object PUT: readers see old or new); raise OSError."""
        import obstore

        try:
            obstore.put(self._client(url.bucket), url.key, data, use_multipart=False)
        except ImageError as exc:
            raise OSError(errno.EIO, exc.message, str(url)) from None
        except _STOPS:
            raise
        except BaseException as exc:  # pyo3's PanicException too
            raise os_error(exc, url) from None

    def head_bytes(self, url: S3Url, n: int) -> bytes:
        """The first ``n`` bytes of an object (fewer if it is shorter); raise ImageError."""
        import obstore

        try:
            size = self.size(url)
            if size == 0:
                return b""
            data = obstore.get_range(
                self._client(url.bucket), url.key, start=0, length=min(n, size)
            )
        except (ImageError, *_STOPS):
            raise
        except BaseException as exc:  # pyo3's PanicException too
            raise image_error(exc, url) from None
        return bytes(data)

    def put_file(self, url: S3Url, path: str) -> None:
        """Upload a local file (multipart when large: it is never read whole); raise OSError."""
        import obstore

        try:
            obstore.put(self._client(url.bucket), url.key, Path(path))
        except ImageError as exc:
            raise OSError(errno.EIO, exc.message, str(url)) from None
        except (OSError, *_STOPS):
            raise
        except BaseException as exc:  # pyo3's PanicException too
            raise os_error(exc, url) from None

    def list(self, prefix: S3Url) -> Iterator[ObjectInfo]:
        """Every object below ``prefix`` (whole segments), in key order; raise ImageError."""
        import obstore

        try:
            stream = obstore.list(self._client(prefix.bucket), prefix.key or None, chunk_size=1000)
            metas = [meta for chunk in stream for meta in chunk]
        except (ImageError, *_STOPS):
            raise
        except BaseException as exc:  # pyo3's PanicException too
            raise image_error(exc, prefix) from None
        metas.sort(key=lambda m: m["path"])
        for meta in metas:
            modified = meta.get("last_modified")
            mtime_ns = int(modified.timestamp() * 1e9) if modified is not None else 0
            yield ObjectInfo(
                S3Url(prefix.bucket, meta["path"]),
                int(meta["size"]),
                str(meta.get("e_tag") or ""),
                mtime_ns,
            )
