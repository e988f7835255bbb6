"""The CLI edge: every outcome is an exit code, every error one line (click's CliRunner)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from kafka.errors import KafkaTimeoutError

from imgstream import errors
from imgstream.cli import cli
from imgstream.cli.app import ImgstreamGroup


def _group() -> click.Group:
    """A group with one command per outcome (the real commands need a broker)."""

    @click.group(cls=ImgstreamGroup)
    def g() -> None:
        pass

    outcomes: dict[str, BaseException | int | None] = {
        "done": None,
        "zero": 0,
        "incomplete": 1,
        "config": errors.ConfigError("--max-batch must be at least 1"),
        "spec": errors.SpecError("unknown operation 'grey'"),
        "broker": errors.BrokerError("no broker answers at h:1"),
        "delivery": errors.DeliveryError("3 records not delivered"),
        "kafka": KafkaTimeoutError("Unable to bootstrap from h:1"),
        "file": FileNotFoundError(2, "No such file or directory", "/no/such"),
        "interrupt": KeyboardInterrupt(),
        "bug": RuntimeError("a bug"),
    }
    for name, outcome in outcomes.items():

        def callback(outcome: BaseException | int | None = outcome) -> int | None:
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        g.command(name)(callback)
    return g


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("done", 0),
        ("zero", 0),
        ("incomplete", 1),
        ("config", 2),
        ("spec", 2),
        ("broker", 3),
        ("delivery", 4),
        ("kafka", 3),
        ("file", 1),
        ("interrupt", 130),
    ],
)
def test_each_outcome_has_its_exit_code_and_at_most_one_line(name, code) -> None:
    result = CliRunner().invoke(_group(), [name])
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    if name in ("done", "zero", "incomplete"):
        assert lines == []  # the command itself said what was incomplete
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), lines


def test_errors_say_what_and_where() -> None:
    assert "h:1" in CliRunner().invoke(_group(), ["kafka"]).stderr
    assert "/no/such" in CliRunner().invoke(_group(), ["file"]).stderr


def test_a_bug_is_not_swallowed() -> None:
    result = CliRunner().invoke(_group(), ["bug"])
    assert isinstance(result.exception, RuntimeError)


def test_every_code_in_errors_is_documented_in_help() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    epilog = result.output.split("Exit codes:")[1]
    documented = {int(line.split()[0]) for line in epilog.splitlines() if line.strip()}
    codes = {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ImgstreamError)
    }
    assert codes | {0, 1, 2, 130} <= documented


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--max-batch", "0"], "--max-batch"),
        (["--png-level", "10"], "--png-level"),
        (["--jpeg-quality", "0"], "--jpeg-quality"),
        (["--max-poll-interval", "10"], "--max-poll-interval"),
        (["--connect-timeout", "0"], "--connect-timeout"),
        (["--format", "gif"], "--format"),
        (["--threads", "many"], "--threads"),
    ],
)
def test_work_refuses_bad_flags_before_connecting(tmp_path, args, flag) -> None:
    # 127.0.0.1:1 would fail with exit 3: exit 2 proves validation came first
    base = ["work", "--bootstrap", "127.0.0.1:1", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, [*base, *args])
    assert result.exit_code == 2, result.output
    assert flag in result.stderr


def test_a_bad_pipeline_spec_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["ops", "grey"])
    assert result.exit_code == 2
    assert "unknown operation 'grey'" in result.stderr and "gray" in result.stderr


def test_a_file_that_is_not_a_store_is_named(tmp_path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all, not even close" * 10)
    result = CliRunner().invoke(cli, ["query", "--db", str(junk)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "--db" in result.stderr


def test_exactly_once_without_bootstrap_is_refused_before_anything_starts(tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(b"not read: refused first")
    result = CliRunner().invoke(
        cli, ["run", str(tmp_path), "--out", str(tmp_path / "out"), "--exactly-once"]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "unreliable" in lines[0] and "--bootstrap" in lines[0], lines
    assert not (tmp_path / "out").exists()
