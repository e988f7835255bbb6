"""OutputGate: store outages are retried and visible, the image's own errors are not."""

from __future__ import annotations

import errno
import threading

import pytest

from imgstream.clock import FakeClock
from imgstream.errors import OutputOutageError, OutputUnavailable
from imgstream.outage import OutputGate, is_infrastructure


def test_infrastructure_errors_are_told_from_the_image_s_own() -> None:
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOTDIR, errno.EACCES):
        assert is_infrastructure(OSError(code, "x"))
    for code in (errno.ENAMETOOLONG, errno.EINVAL):
        assert not is_infrastructure(OSError(code, "x"))


def test_a_full_store_is_retried_until_it_has_room_with_one_event_per_change() -> None:
    states: list[bool] = []
    gate = OutputGate(FakeClock(), states.append, first_backoff_s=0.0)
    failures = iter([errno.ENOSPC] * 5)
    written: list[bool] = []

    def write() -> None:
        code = next(failures, None)
        if code is not None:
            assert gate.blocked or not written
            raise OSError(code, "No space left on device")
        written.append(True)

    gate.write("/out/a.png", write)
    assert written == [True] and not gate.blocked
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
