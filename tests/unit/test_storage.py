"""SafeStore refuses traversal, escapes, special files and oversize input."""

from __future__ import annotations

import os
import threading

import pytest

from imgstream.errors import FORBIDDEN, NOT_FOUND, TOO_LARGE, ImageError
from imgstream.storage import SafeStore, output_path, safe_name, write_atomic


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(b"abc")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    return root, outside


def kind(store: SafeStore, uri: str) -> str:
    with pytest.raises(ImageError) as info:
        store.read(uri)
    return info.value.type


def test_reads_relative_absolute_and_file_uris(tree) -> None:
    root, _ = tree
    store = SafeStore([root])
    assert store.read("sub/a.jpg").data == b"abc"
    assert store.read(str(root / "sub" / "a.jpg")).data == b"abc"
    assert store.read((root / "sub" / "a.jpg").as_uri()).data == b"abc"


def test_traversal_and_outside_paths_are_forbidden(tree) -> None:
    root, outside = tree
    store = SafeStore([root])
    assert kind(store, "../outside/secret.jpg") == FORBIDDEN
    assert kind(store, "sub/../../outside/secret.jpg") == FORBIDDEN
    assert kind(store, str(outside / "secret.jpg")) == FORBIDDEN
    assert kind(store, "/etc/passwd") == FORBIDDEN
    assert kind(store, "s3://bucket/x.jpg") == FORBIDDEN
    assert kind(store, "file://evil.host/x.jpg") == FORBIDDEN
    assert kind(store, "sub/missing.jpg") == NOT_FOUND


def test_symlink_escape_is_forbidden_but_inside_links_work(tree) -> None:
    root, outside = tree
    os.symlink(outside / "secret.jpg", root / "link.jpg")
    os.symlink(outside, root / "dirlink")
    os.symlink(root / "sub" / "a.jpg", root / "inside.jpg")
    store = SafeStore([root])
    assert kind(store, "link.jpg") == FORBIDDEN
    assert kind(store, "dirlink/secret.jpg") == FORBIDDEN
    assert store.read("inside.jpg").data == b"abc"


def test_hardlinks_are_refused_unless_allowed(tree) -> None:
    root, outside = tree
    os.link(outside / "secret.jpg", root / "hard.jpg")
    assert kind(SafeStore([root]), "hard.jpg") == FORBIDDEN
    assert SafeStore([root], allow_hardlinks=True).read("hard.jpg").data == b"secret"


def test_fifo_does_not_hang(tree) -> None:
    root, _ = tree
    os.mkfifo(root / "pipe.jpg")
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(kind(SafeStore([root]), "pipe.jpg")))
    t.start()
    t.join(5)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert result == [FORBIDDEN]


def test_directory_is_not_a_file(tree) -> None:
    root, _ = tree
    assert kind(SafeStore([root]), "sub") == FORBIDDEN


def test_oversize_is_too_large(tree) -> None:
    root, _ = tree
    (root / "big.jpg").write_bytes(b"x" * 1001)
    assert kind(SafeStore([root], max_bytes=1000), "big.jpg") == TOO_LARGE
    assert SafeStore([root], max_bytes=1001).read("big.jpg").data == b"x" * 1001


def test_output_paths_are_deterministic_and_safe(tmp_path) -> None:
    p1 = output_path(str(tmp_path), "abc", "cam/1", "../../etc/x", "png")
    assert p1 == output_path(str(tmp_path), "abc", "cam/1", "../../etc/x", "png")
    assert os.path.realpath(p1).startswith(str(tmp_path / "abc"))
    assert safe_name("a/b") != safe_name("a_b")
    write_atomic(p1, b"one")
    write_atomic(p1, b"two")
    with open(p1, "rb") as fh:
        assert fh.read() == b"two"
    assert [n for n in os.listdir(os.path.dirname(p1)) if n.startswith(".tmp")] == []
