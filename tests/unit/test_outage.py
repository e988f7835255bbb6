"""OutputGate: store outages are retried and visible, the image's own errors are not.

A destination that fails alone (its folder replaced by a file) while others
take writes fails its images after bounded retries; it neither blocks the
gate nor flips it.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import pytest

from imgstream.clock import FakeClock
from imgstream.errors import OutputOutageError, OutputUnavailable
from imgstream.io.outage import PATH_TRIES, OutputGate, is_infrastructure


def test_infrastructure_errors_are_told_from_the_image_s_own() -> None:
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOTDIR, errno.EACCES):
        assert is_infrastructure(OSError(code, "x"))
    for code in (errno.ENAMETOOLONG, errno.EINVAL):
        assert not is_infrastructure(OSError(code, "x"))


def test_a_full_store_is_retried_until_it_has_room_with_one_event_per_change() -> None:
    states: list[bool] = []
    gate = OutputGate(FakeClock(), states.append, first_backoff_s=0.0)
    failures = iter([errno.ENOSPC] * 5)
    blocked_while_failing: list[bool] = []
    written: list[bool] = []

    def write() -> None:
        code = next(failures, None)
        if code is not None:
            blocked_while_failing.append(gate.blocked)
            raise OSError(code, "No space left on device")
        written.append(True)

    gate.write("/out/a.png", write)
    assert written == [True] and not gate.blocked
    # Not blocked before the first failure; blocked during every retry after it.
    assert blocked_while_failing == [False, True, True, True, True]
    assert states == [True, False]  # one change each way, not one per retry


def test_the_image_s_own_error_is_raised_at_once() -> None:
    gate = OutputGate(FakeClock(), first_backoff_s=0.0)

    def write() -> None:
        raise OSError(errno.ENAMETOOLONG, "File name too long")

    with pytest.raises(OSError):
        gate.write("/out/a.png", write)
    assert not gate.blocked


def test_an_outage_past_the_limit_stops_the_worker_and_close_releases_writers() -> None:
    clock = FakeClock()
    gate = OutputGate(clock, max_outage_s=30.0, first_backoff_s=0.01)
    outcome: list[BaseException] = []

    def write() -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    def writer() -> None:
        try:
            gate.write("/out/a.png", write)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while not gate.blocked:
            thread.join(0.01)
        gate.check()
        clock.advance(29.0)
        gate.check()
        clock.advance(2.0)
        with pytest.raises(OutputOutageError) as info:
            gate.check()
        assert info.value.exit_code == 5
    finally:
        gate.close()
        thread.join(10)
    [error] = outcome
    assert isinstance(error, OutputUnavailable)
    assert not gate.blocked


def _write_file(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_one_folder_replaced_by_a_file_fails_its_images_while_others_are_written(
    tmp_path: Path,
) -> None:
    """The review's repro: out/<hash>/cam1 is a file; cam2 keeps writing.

    The old gate flipped between blocked and writable on every success of
    cam2 (60 changes in 1.5 s), never failed cam1's image and so never let
    ``--max-outage`` fire. Now cam1's images fail after bounded retries and
    the gate never blocks.
    """
    states: list[bool] = []
    gate = OutputGate(FakeClock(), states.append, max_outage_s=1.0, first_backoff_s=0.005)
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "cam1").write_bytes(b"not a folder")
    stop = threading.Event()
    good: list[int] = []

    def cam2() -> None:
        i = 0
        while not stop.is_set():
            path = tmp_path / "h" / "cam2" / f"{i}.png"
            gate.write(str(path), lambda p=path: _write_file(p))
            good.append(i)
            i += 1

    thread = threading.Thread(target=cam2)
    thread.start()
    outcomes: list[BaseException | None] = []

    def cam1() -> None:
        for i in range(3):
            path = tmp_path / "h" / "cam1" / f"{i}.png"
            try:
                gate.write(str(path), lambda p=path: _write_file(p))
                outcomes.append(None)
            except BaseException as exc:
                outcomes.append(exc)

    bad = threading.Thread(target=cam1)
    bad.start()
    bad.join(20)
    stop.set()
    thread.join(10)
    gate.close()
    assert not bad.is_alive(), "cam1's writes never gave up"
    assert len(outcomes) == 3
    folder_errors = (errno.ENOTDIR, errno.EEXIST)
    assert all(isinstance(e, OSError) and e.errno in folder_errors for e in outcomes)
    assert good, "cam2 was never written"
    assert states == []  # the store worked throughout: no outage, no flip-flop
    gate.check()  # and --max-outage has nothing to fire on


def test_a_folder_failing_alone_is_retried_a_bounded_number_of_times() -> None:
    gate = OutputGate(FakeClock(), first_backoff_s=0.0)
    gate.write("/out/h/cam2/0.png", lambda: None)  # the store takes writes
    calls: list[int] = []

    def refuse() -> None:
        calls.append(1)
        if len(calls) == 2:
            gate.write("/out/h/cam2/1.png", lambda: None)  # another folder succeeds meanwhile
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(OSError):
        gate.write("/out/h/cam1/0.png", refuse)
    assert len(calls) == PATH_TRIES
    assert not gate.blocked


def test_the_whole_store_refusing_a_folder_error_is_an_outage(tmp_path: Path) -> None:
    """out/ lost its permissions: every folder says EACCES and nothing succeeds."""
    states: list[bool] = []
    gate = OutputGate(FakeClock(), states.append, first_backoff_s=0.005)
    outcome: list[BaseException] = []

    def refuse() -> None:
        raise OSError(errno.EACCES, "Permission denied")

    def writer() -> None:
        try:
            gate.write("/out/h/cam1/0.png", refuse)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    while not gate.blocked and thread.is_alive():
        thread.join(0.01)
    assert gate.blocked and not outcome  # waiting, not dead-lettered
    gate.write("/out/h/cam2/0.png", lambda: None)  # the store works again, for others
    thread.join(10)
    [error] = outcome
    assert isinstance(error, OSError) and error.errno == errno.EACCES  # now it is the folder's
    assert states == [True, False]


def test_successes_elsewhere_do_not_end_a_full_disk_outage() -> None:
    """A small file fits on a nearly full disk: the outage goes on for the big one."""
    states: list[bool] = []
    clock = FakeClock()
    gate = OutputGate(clock, states.append, max_outage_s=5.0, first_backoff_s=0.002)
    room = threading.Event()

    def big() -> None:
        if not room.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")

    thread = threading.Thread(target=gate.write, args=("/out/h/s/big.png", big))
    thread.start()
    while not gate.blocked:
        thread.join(0.01)
    for i in range(20):
        gate.write(f"/out/h/s/small{i}.png", lambda: None)
        assert gate.blocked
    clock.advance(6.0)
    with pytest.raises(OutputOutageError):
        gate.check()  # --max-outage counts the whole outage
    room.set()
    thread.join(10)
    assert not gate.blocked
    assert states == [True, False]


def test_with_no_other_writes_the_probe_tells_a_lone_folder_from_a_dead_store(
    tmp_path: Path,
) -> None:
    """Nothing else is being written: a probe at the top of the store decides."""
    states: list[bool] = []
    gate = OutputGate(FakeClock(), states.append, first_backoff_s=0.001)
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "cam1").write_bytes(b"not a folder")
    bad = tmp_path / "h" / "cam1" / "0.png"
    probe = tmp_path / "h" / ".probe"
    with pytest.raises(OSError):
        gate.write(str(bad), lambda: _write_file(bad), lambda: _write_file(probe))
    assert states == [] and probe.exists()  # the store works: cam1 alone fails

    def dead_probe() -> None:
        raise OSError(errno.EACCES, "Permission denied")

    outcome: list[BaseException] = []

    def writer() -> None:
        try:
            gate.write("/x/h/c/0.png", dead_probe, dead_probe)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    while not gate.blocked:
        thread.join(0.01)
    gate.close()  # the whole store refuses: an outage, until shutdown
    thread.join(10)
    assert states == [True, False]
    assert [type(e) for e in outcome] == [OutputUnavailable]
