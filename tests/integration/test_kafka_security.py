"""Apache Kafka with TLS, SASL and ACLs: ``--kafka-config`` end to end, and its errors.

One cluster for the module: a single KRaft node whose CLIENT listener is
SASL_SSL, with a broker certificate from a CA the test makes (``openssl``),
SCRAM-SHA-512 users created when the storage is formatted (``--add-scram``),
one PLAIN user, and the KRaft ``StandardAuthorizer``. ACLs are granted over
the INTERNAL (PLAINTEXT) listener, whose ANONYMOUS principal is a super user;
setup steps (topics, refs, reading records and offsets) use it too. What is
under test goes through the CLIENT listener with a properties file only: no
``--bootstrap``, the file's ``bootstrap.servers`` stands in.

Users: ``alice`` (SCRAM) and ``carol`` (PLAIN) may do anything with topics and
read groups; ``bob`` (SCRAM) may describe and write topics and read groups,
but read no topic other than imgstream's own bookkeeping (``imgstream.*``: the
attempts and state topics a worker reads when it is assigned partitions).

Kafka only (Tansu has no TLS, SASL or ACLs). Skipped with the reason when
java or mvn (or openssl) are missing; with IMGSTREAM_REQUIRE_KAFKA=1 or
CI=true that is a failure instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest
from kafka import KafkaAdminClient
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
)

from imgstream.kafka_io import topic_state
from tests.fixtures.kafka import Topics
from tests.fixtures.processes import Background
from tests.fixtures.tls import make_ca, make_server, openssl_available
from tests.helpers import refs_for

KRAFT = Path(__file__).parents[2] / "compose" / "kafka" / "kraft.py"
SCRAM_USERS = {"alice": "alice-Pw-7f3c1e", "bob": "bob-Pw-2d9a40"}
PLAIN_USERS = {"carol": "carol-Pw-c81b55"}
PASSWORDS = [*SCRAM_USERS.values(), *PLAIN_USERS.values()]
SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


def _kraft() -> ModuleType:
    spec = importlib.util.spec_from_file_location("imgstream_test_kraft", KRAFT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require(kraft: ModuleType) -> None:
    """Skip (or fail, where Kafka is required) when the cluster cannot run here."""
    ok, reason = kraft.available()
    if ok:
        ok, reason = openssl_available()
    if ok:
        return
    if os.environ.get("IMGSTREAM_REQUIRE_KAFKA") == "1" or os.environ.get("CI") == "true":
        pytest.fail(f"Apache Kafka is required here, but: {reason}")
    pytest.skip(f"Apache Kafka cannot run here: {reason}")


@dataclass
class SecureKafka:
    """The cluster, its CA, a CA it does not know, and a folder for client files."""

    cluster: Any
    ca: Path
    other_ca: Path
    directory: Path

    @property
    def internal(self) -> str:
        """The PLAINTEXT listener for setup steps (ANONYMOUS, a super user)."""
        return str(self.cluster.internal_bootstrap)

    def client_config(self, user: str, password: str | None = None, ca: Path | None = None) -> Path:
        """A client properties file for ``user`` (PLAIN users as a JAAS line)."""
        plain = user in PLAIN_USERS
        password = password or {**SCRAM_USERS, **PLAIN_USERS}[user]
        module = PLAIN_MODULE if plain else SCRAM_MODULE
        path = self.directory / f"{user}-{uuid.uuid4().hex[:6]}.properties"
        path.write_text(
            "# written by the test\n"
            f"bootstrap.servers={self.cluster.bootstrap}\n"
            "security.protocol=SASL_SSL\n"
            f"sasl.mechanism={'PLAIN' if plain else 'SCRAM-SHA-512'}\n"
            f'sasl.jaas.config={module} required \\\n    username="{user}" password="{password}";\n'
            f"ssl.ca.location={ca or self.ca}\n"
        )
        path.chmod(0o600)
        return path


def _grant(bootstrap: str) -> None:
    def allow(user: str, op: ACLOperation, kind: ResourceType) -> ACL:
        pattern = ResourcePattern(kind, "*")
        return ACL(f"User:{user}", "*", op, ACLPermissionType.ALLOW, pattern)

    acls = [allow(u, ACLOperation.ALL, ResourceType.TOPIC) for u in ("alice", "carol")]
    acls += [allow(u, ACLOperation.READ, ResourceType.GROUP) for u in ("alice", "bob", "carol")]
    acls += [
        allow("bob", op, ResourceType.TOPIC) for op in (ACLOperation.DESCRIBE, ACLOperation.WRITE)
    ]
    bookkeeping = ResourcePattern(ResourceType.TOPIC, "imgstream.", ACLResourcePatternType.PREFIXED)
    acls.append(ACL("User:bob", "*", ACLOperation.READ, ACLPermissionType.ALLOW, bookkeeping))
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        outcome = admin.create_acls(acls)
    finally:
        admin.close()
    assert not outcome["failed"], outcome["failed"]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """One SASL_SSL + ACL cluster for the module (its start-up time is printed)."""
    kraft = _kraft()
    _require(kraft)
    directory = tmp_path_factory.mktemp("secure-kafka")
    began = time.monotonic()
    ca = make_ca(directory, "test-ca")
    server = make_server(directory, "broker", ca)
    other = make_ca(directory, "other-ca")
    users = ",".join(f'user_{u}="{p}"' for u, p in PLAIN_USERS.items())
    cluster = kraft.KafkaCluster(
        nodes=1,
        heap_mb=256,
        client_protocol="SASL_SSL",
        properties={
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(server.keystore),
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
            "listener.name.client.scram-sha-512.sasl.jaas.config": f"{SCRAM_MODULE} required;",
            "listener.name.client.plain.sasl.jaas.config": f"{PLAIN_MODULE} required {users};",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:ANONYMOUS",
        },
        format_args=[
            arg
            for user, password in SCRAM_USERS.items()
            for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]")
        ],
        workdir=directory / "kafka",
    )
    cluster.start(timeout_s=120)
    try:
        _grant(cluster.internal_bootstrap)
        print(f"secure Kafka ready in {time.monotonic() - began:.1f}s")
        yield SecureKafka(cluster, ca.cert, other.cert, directory)
    finally:
        cluster.close()


@pytest.fixture
def setup_topics(secure: SecureKafka, background: Callable[..., Background]) -> Iterator[Topics]:
    """Fresh topics made over the INTERNAL listener (readers and producers there too)."""
    t = Topics(secure.internal, background, partitions=2)
    yield t
    t.close()


def _topic_flags(t: Topics) -> list[str]:
    return ["--topic", t.refs, "--results-topic", t.results, "--dlq-topic", t.dlq]


def _no_password_in(*texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        for password in PASSWORDS:
            assert password.encode() not in data, f"a password leaked: {data[:200]!r}..."


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def _gray_equal(result_uri: str, source: str) -> bool:
    out = cv2.imread(result_uri, cv2.IMREAD_UNCHANGED)
    return bool(np.array_equal(out, cv2.cvtColor(cv2.imread(source), cv2.COLOR_BGR2GRAY)))


def test_run_over_sasl_ssl_processes_every_photo_and_no_password_leaks(
    secure, photos, run_cli, tmp_path
) -> None:
    tag = uuid.uuid4().hex[:8]
    flags = ["--topic", f"refs-{tag}", "--results-topic", f"res-{tag}", "--dlq-topic", f"dlq-{tag}"]
    out = tmp_path / "out"
    config = secure.client_config("alice")
    done = run_cli(
        "-vv", "run", str(photos[0].parent), "--out", str(out), "--kafka-config", str(config),
        "--workers", "2", *flags, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    results = {r["uri"]: r for r in records if r["kind"] == "result"}
    assert sorted(results) == sorted(str(p) for p in photos)
    for path in photos:
        assert _gray_equal(results[str(path)]["output_uri"], str(path)), path
    # the workers got the file by path (to_args), and wrote their logs beside the outputs
    assert len(list((out / "logs").glob("worker-*.log"))) == 2
    written = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    _no_password_in(done.stdout, done.stderr, *written)


def test_a_plain_worker_keeps_its_password_out_of_logs_records_and_metrics(
    secure, setup_topics, background, write_images, tmp_path
) -> None:
    images = write_images(tmp_path / "in", 6)
    refs = refs_for(images)
    setup_topics.produce(refs)
    config = secure.client_config("carol")
    worker = background(
        "-vv", "work", "--kafka-config", str(config), "--group", setup_topics.group,
        *_topic_flags(setup_topics), "--out", str(tmp_path / "out"),
        "--root", str(tmp_path / "in"), "--threads", "2", "--metrics-port", "0",
        name="worker",
    )  # fmt: skip
    port = re.search(
        r"metrics on http://127\.0\.0\.1:(\d+)/metrics",
        worker.wait_for_output("/metrics", timeout=60),
    )
    assert port is not None
    stream = setup_topics.stream().wait_for({r.id for r in refs}, timeout_s=60)
    with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=10) as r:
        metrics = r.read()
    assert b"imgstream_images_total" in metrics
    assert worker.stop() == 0
    by_id = {r.id: r for r in stream.records}
    for ref in refs:
        assert _gray_equal(by_id[ref.id].output_uri, ref.uri), ref.id
    raw = [m.value for m in _read_raw(setup_topics)]
    log = worker.output()
    assert "SaslAuthenticateRequest" in log  # -vv logged the PLAIN token: masked
    _no_password_in(log, metrics, *raw)


def _read_raw(t: Topics) -> list[Any]:
    reader = t.records()
    deadline, messages = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        batch = reader.poll(0.5)
        if not batch and messages:
            break
        messages += batch
    return messages


def test_a_wrong_password_exits_3_naming_authentication_within_30s(
    secure, run_cli, tmp_path
) -> None:
    config = secure.client_config("alice", password="not-" + SCRAM_USERS["alice"])
    began = time.monotonic()
    done = run_cli("work", "--kafka-config", str(config), "--out", str(tmp_path), timeout=60)
    took = time.monotonic() - began
    assert done.returncode == 3, done.stdout + done.stderr
    line = _one_error_line(done.stderr)
    server = secure.cluster.bootstrap
    assert line == f"error: authentication failed for user 'alice' at {server} (SASL SCRAM-SHA-512)"
    assert took < 30, took
    _no_password_in(done.stdout, done.stderr)
    print(f"wrong password: exit 3 after {took:.1f}s")


def test_an_unknown_ca_exits_3_naming_the_tls_handshake(secure, run_cli, tmp_path) -> None:
    config = secure.client_config("alice", ca=secure.other_ca)
    began = time.monotonic()
    done = run_cli(
        "produce", str(tmp_path), "--kafka-config", str(config), "--connect-timeout", "5"
    )
    took = time.monotonic() - began
    assert done.returncode == 3, done.stdout + done.stderr
    line = _one_error_line(done.stderr)
    server = secure.cluster.bootstrap
    assert line.startswith(f"error: TLS handshake with {server} failed: certificate verify failed")
    assert took < 30, took
    print(f"unknown CA: exit 3 after {took:.1f}s")


def test_a_principal_without_read_on_refs_exits_3_and_commits_nothing(
    secure, setup_topics, write_images, run_cli, tmp_path
) -> None:
    images = write_images(tmp_path / "in", 3)
    setup_topics.produce(refs_for(images))
    config = secure.client_config("bob")
    began = time.monotonic()
    done = run_cli(
        "work", "--kafka-config", str(config), "--group", setup_topics.group,
        *_topic_flags(setup_topics), "--out", str(tmp_path / "out"),
        "--root", str(tmp_path / "in"), timeout=60,
    )  # fmt: skip
    took = time.monotonic() - began
    assert done.returncode == 3, done.stdout + done.stderr
    line = _one_error_line(done.stderr)
    assert line == (
        f"error: not authorized to read topic '{setup_topics.refs}' as user 'bob' "
        f"at {secure.cluster.bootstrap}"
    )
    assert took < 30, took
    states = topic_state(secure.internal, setup_topics.refs, setup_topics.group)
    assert [s.committed for s in states] == [None] * len(states)
    assert sum(s.highwater for s in states) == len(images)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))
