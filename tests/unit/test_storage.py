"""SafeStore refuses traversal, escapes, special files and oversize input."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from imgstream.errors import FORBIDDEN, NOT_FOUND, TOO_LARGE, ImageError
from imgstream.io.storage import SafeStore, output_path, safe_name, write_atomic
from imgstream.io.stores import LocalOutputs


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


def test_links_are_followed_inside_and_refused_when_they_climb_out(tree) -> None:
    root, _ = tree
    os.symlink("sub", root / "rel")  # relative link to a directory
    os.symlink("../sub/a.jpg", root / "sub" / "up.jpg")  # '..' inside the root is fine
    os.symlink(str(root / "sub"), root / "abs")  # absolute link into the root
    os.symlink("../../outside/secret.jpg", root / "sub" / "climb.jpg")
    os.symlink("../..", root / "sub" / "top")
    os.symlink("loop", root / "loop")
    store = SafeStore([root])
    assert store.read("rel/a.jpg").data == b"abc"
    assert store.read("sub/up.jpg").data == b"abc"
    assert store.read("abs/a.jpg").data == b"abc"
    assert store.read("rel/a.jpg").path == str(root / "sub" / "a.jpg")
    assert kind(store, "sub/climb.jpg") == FORBIDDEN
    assert kind(store, "sub/top/outside/secret.jpg") == FORBIDDEN
    assert kind(store, "loop") == FORBIDDEN
    assert kind(store, "rel") == FORBIDDEN  # a directory, through a link


def test_second_root_and_missing_components(tree, tmp_path) -> None:
    root, _ = tree
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.jpg").write_bytes(b"bbb")
    store = SafeStore([root, other])
    assert store.read("b.jpg").data == b"bbb"
    assert store.read(str(other / "b.jpg")).data == b"bbb"
    assert kind(store, "sub/a.jpg/x.jpg") == NOT_FOUND  # a file used as a directory
    assert kind(store, "nodir/x.jpg") == NOT_FOUND
    assert kind(store, "") == FORBIDDEN
    assert kind(SafeStore([tmp_path / "gone"]), "a.jpg") == NOT_FOUND


def test_no_descriptor_is_left_open(tree) -> None:
    root, outside = tree
    os.symlink(outside, root / "dirlink")
    os.symlink("sub", root / "rel")
    store = SafeStore([root])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        assert store.resolve("rel/a.jpg") == str(root / "sub" / "a.jpg")
        assert store.read("rel/a.jpg").data == b"abc"
        for bad in ("dirlink/secret.jpg", "sub/missing.jpg", "sub", "rel"):
            with pytest.raises(ImageError):
                store.read(bad)
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.fixture
def syncs(monkeypatch):
    """Every fsync and rename, in order: ("fsync", (dev, inode), is_dir) / ("replace", name)."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", (st.st_dev, st.st_ino), stat.S_ISDIR(st.st_mode)))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("replace", os.path.basename(os.fsdecode(dst))))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def _ident(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def test_fsync_syncs_the_directory_after_the_rename(tmp_path, syncs) -> None:
    """Without it a committed output can vanish on power loss: the rename lives in the directory."""
    out = tmp_path / "out"
    out.mkdir()
    LocalOutputs(fsync=True).write(str(out / "a.png"), b"one")
    assert (out / "a.png").read_bytes() == b"one"
    kinds = [e[0] if e[0] == "replace" else ("dir" if e[2] else "file") for e in syncs]
    assert kinds == ["file", "replace", "dir"], syncs
    assert syncs[2][1] == _ident(out)  # the directory the file was renamed in
    assert syncs[0][1] == _ident(out / "a.png")  # the bytes, before the rename


def test_fsync_also_syncs_the_directories_it_created(tmp_path, syncs) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_atomic(str(out / "hash" / "cam" / "a.png"), b"x", fsync=True)
    synced_dirs = {e[1] for e in syncs if e[0] == "fsync" and e[2]}
    # each new entry is durable: out's entry "hash", hash's "cam", cam's "a.png"
    assert {_ident(out), _ident(out / "hash"), _ident(out / "hash" / "cam")} <= synced_dirs
    assert syncs[-1] == ("fsync", _ident(out / "hash" / "cam"), True)


def test_no_fsync_unless_asked(tmp_path, syncs) -> None:
    write_atomic(str(tmp_path / "new" / "a.png"), b"x")
    LocalOutputs().write(str(tmp_path / "b.png"), b"y")
    assert [e for e in syncs if e[0] == "fsync"] == []
    assert (tmp_path / "new" / "a.png").read_bytes() == b"x"
    assert sorted(os.listdir(tmp_path / "new")) == ["a.png"]
    assert stat.S_IMODE(os.stat(tmp_path / "b.png").st_mode) == 0o644


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "a.png"), b"x", fsync=True)
    assert os.listdir(tmp_path) == []
