"""An unreachable broker: every command says so in one line and exits 3, within its timeout."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import click
import pytest

from imgstream.cli import cli
from tests.helpers import cli as run_cli

CONNECT_TIMEOUT_S = 2.0
#: Interpreter start-up and imports on a loaded 2-core machine, on top of the timeout.
STARTUP_S = 6.0


def _with_bootstrap(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    for name, command in group.commands.items():
        path = (*prefix, name)
        if isinstance(command, click.Group):
            yield from _with_bootstrap(command, path)
        elif any("--bootstrap" in p.opts for p in command.params):
            yield " ".join(path)


def _args(tmp_path) -> dict[str, list[str]]:
    """Each command that takes --bootstrap, with what else it needs to get that far."""
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    out = str(tmp_path / "out")
    return {
        "status": [],
        "offsets reset": ["--group", "g", "--to-earliest"],
        "produce": [str(image)],
        "capture": [str(tmp_path / "missing.mp4")],
        "work": ["--out", out],
        "run": [str(image.parent), "--out", out],
        "replay": ["--from", "0", "--out", out],
        "aggregate": ["--db", str(tmp_path / "r.db")],
    }


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections are refused, no one else takes it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def test_the_list_covers_every_command_that_takes_bootstrap(tmp_path) -> None:
    assert set(COMMANDS) == set(_with_bootstrap(cli)) == set(_args(tmp_path))


COMMANDS = ["aggregate", "capture", "offsets reset", "produce", "replay", "run", "status", "work"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_broker_is_one_line_and_exit_3(tmp_path, closed_port, command) -> None:
    address = f"127.0.0.1:{closed_port}"
    args = [
        *command.split(),
        *_args(tmp_path)[command],
        "--bootstrap",
        address,
        "--connect-timeout",
        str(CONNECT_TIMEOUT_S),
    ]
    started = time.monotonic()
    proc = run_cli(*args, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert address in lines[0] and "--connect-timeout" in lines[0]
    assert elapsed < CONNECT_TIMEOUT_S + STARTUP_S, elapsed


@pytest.mark.parametrize("command", ["work", "replay"])
def test_a_bad_spec_is_exit_2_before_the_broker_is_tried(tmp_path, closed_port, command) -> None:
    """The spec (and its plugins) is checked first: a bad --ops with no broker is still exit 2."""
    args = [*command.split(), *_args(tmp_path)[command], "--ops", "gray|nosuchop"]
    args += ["--bootstrap", f"127.0.0.1:{closed_port}", "--connect-timeout", "30"]
    started = time.monotonic()
    proc = run_cli(*args, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert time.monotonic() - started < STARTUP_S  # did not wait out --connect-timeout
    [line] = proc.stderr.splitlines()
    assert "nosuchop" in line and "Traceback" not in proc.stdout
