"""Benchmark: S3 client libraries for the worker's reads (obstore vs boto3 vs s3fs).

Run on purpose, not in the tests (`pip install -e '.[test,bench]'` first:
boto3 and s3fs are only in the ``bench`` extra). A moto S3 server on loopback
holds ``--n`` JPEG-sized objects; each library, in turn, measures:

* ``get``: whole-object GETs one after another with one reused client (ms per GET);
* ``fresh``: a new client for every GET (what a worker without connection reuse pays);
* ``batch``: a micro-batch fetched concurrently by ``--threads`` threads (objects/s),
  as the worker's image threads do; s3fs also with its own ``cat`` of a path list.

Every byte read is checked against what was stored. The server is the same
for all, so the ratios are what matters; moto's server is itself slow (pure
Python), so absolute rates against MinIO or AWS are higher.

    python benchmarks/bench_objstore.py [--n 300] [--size 200000] [--threads 16]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint + "/", timeout=2).read()
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("moto_server did not start") from None
            time.sleep(0.2)


def env_for(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_REGION": "us-east-1",
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
    }


class Lib:
    """One library: ``make()`` a client, ``get(client, key)`` the bytes."""

    def __init__(
        self,
        name: str,
        make: Callable[[], Any],
        get: Callable[[Any, str], bytes],
        batch: Callable[[Any, list[str]], list[bytes]] | None = None,
    ) -> None:
        self.name, self.make, self.get, self.batch = name, make, get, batch


def libraries(endpoint: str, threads: int) -> list[Lib]:
    env = env_for(endpoint)
    libs = []

    from imgstream.io.objstore import ObjectStore, S3Url

    libs.append(
        Lib(
            "obstore",
            lambda: ObjectStore(env),
            lambda c, k: c.get(S3Url(BUCKET, k), 1 << 30),
        )
    )
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        print("boto3 is not installed (pip install -e '.[bench]'): skipped", file=sys.stderr)
    else:

        def boto_client() -> Any:
            return boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                region_name="us-east-1",
                config=Config(max_pool_connections=max(10, threads)),
            )

        libs.append(
            Lib(
                "boto3",
                boto_client,
                lambda c, k: c.get_object(Bucket=BUCKET, Key=k)["Body"].read(),
            )
        )
    try:
        import s3fs
    except ImportError:
        print("s3fs is not installed (pip install -e '.[bench]'): skipped", file=sys.stderr)
    else:

        def fs_client() -> Any:
            return s3fs.S3FileSystem(
                key=env["AWS_ACCESS_KEY_ID"],
                secret=env["AWS_SECRET_ACCESS_KEY"],
                endpoint_url=endpoint,
                skip_instance_cache=True,
                use_listings_cache=False,
            )

        def fs_batch(c: Any, keys: list[str]) -> list[bytes]:
            got = c.cat([f"{BUCKET}/{k}" for k in keys])
            return [got[f"{BUCKET}/{k}"] for k in keys]

        libs.append(Lib("s3fs", fs_client, lambda c, k: c.cat_file(f"{BUCKET}/{k}"), fs_batch))
    return libs


def measure(lib: Lib, keys: list[str], digests: dict[str, str], threads: int) -> dict[str, Any]:
    def check(key: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != digests[key]:
            raise SystemExit(f"{lib.name}: wrong bytes for {key}")

    client = lib.make()
    check(keys[0], lib.get(client, keys[0]))  # connect, resolve, warm up
    times = []
    for key in keys:
        t0 = time.perf_counter()
        data = lib.get(client, key)
        times.append(time.perf_counter() - t0)
        check(key, data)
    fresh = []
    for key in keys[:30]:
        t0 = time.perf_counter()
        data = lib.get(lib.make(), key)
        fresh.append(time.perf_counter() - t0)
        check(key, data)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda k: lib.get(client, k), keys[:threads]))  # warm the pool
        t0 = time.perf_counter()
        for key, data in zip(keys, pool.map(lambda k: lib.get(client, k), keys), strict=True):
            check(key, data)
        batch_s = time.perf_counter() - t0
    row: dict[str, Any] = {
        "lib": lib.name,
        "get_ms_median": round(statistics.median(times) * 1000, 2),
        "get_ms_mean": round(statistics.fmean(times) * 1000, 2),
        "fresh_client_ms_median": round(statistics.median(fresh) * 1000, 2),
        "batch_obj_per_s": round(len(keys) / batch_s, 1),
    }
    if lib.batch is not None:
        t0 = time.perf_counter()
        for key, data in zip(keys, lib.batch(client, keys), strict=True):
            check(key, data)
        row["native_batch_obj_per_s"] = round(len(keys) / (time.perf_counter() - t0), 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="objects")
    parser.add_argument("--size", type=int, default=200_000, help="bytes per object")
    parser.add_argument("--threads", type=int, default=16, help="concurrent fetchers")
    args = parser.parse_args()
    proc, endpoint = start_moto()
    try:
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=10
        ).read()
        from imgstream.io.objstore import ObjectStore, S3Url

        seeder = ObjectStore(env_for(endpoint))
        keys, digests = [], {}
        for i in range(args.n):
            data = os.urandom(args.size)
            key = f"in/frame{i:05d}.jpg"
            seeder.put(S3Url(BUCKET, key), data)
            keys.append(key)
            digests[key] = hashlib.sha256(data).hexdigest()
        rows = [
            measure(lib, keys, digests, args.threads) for lib in libraries(endpoint, args.threads)
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"{args.n} objects of {args.size} bytes, {args.threads} threads, moto on loopback")
    print(f"{'lib':8} {'GET ms (median)':>16} {'fresh client ms':>16} {'batch obj/s':>12}")
    for r in rows:
        extra = (
            f"  (own batch: {r['native_batch_obj_per_s']} obj/s)"
            if "native_batch_obj_per_s" in r
            else ""
        )
        print(
            f"{r['lib']:8} {r['get_ms_median']:>16} {r['fresh_client_ms_median']:>16} "
            f"{r['batch_obj_per_s']:>12}{extra}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
