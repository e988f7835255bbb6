"""The settings table: flags, environment and the worker command line all derive from it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import click
import pytest

from imgstream import config as cfg
from imgstream.cli import cli
from imgstream.cli.options import build_config
from imgstream.config import WorkerConfig, to_args
from imgstream.consumers.processes import worker_command
from imgstream.errors import ConfigError

FLAG = re.compile(r"--[a-z][a-z-]*[a-z]")
WORK = cli.commands["work"]
WORK_FLAGS = {opt for p in WORK.params for opt in p.opts}
NAMES = [f.name for f in cfg.settings()]


def _parse(args: list[str]) -> WorkerConfig:
    """What ``imgstream work ARGS`` builds, without running it."""
    ctx = WORK.make_context("work", list(args))
    return build_config({n: ctx.params[n] for n in NAMES})


def _unusual(tmp_path) -> WorkerConfig:
    """A config where every setting differs from its default."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "client.properties").write_text("client.id=unusual\nrequest.timeout.ms=5000\n")
    return WorkerConfig(
        bootstrap="broker:9092",
        out_dir=str(tmp_path / "out"),
        ops="gray|blur:k=5",
        group="g",
        refs_topic="r",
        results_topic="res",
        dlq_topic="d",
        attempts_topic="att",
        state_topic="st",
        roots=(str(tmp_path / "a"), str(tmp_path / "b")),
        max_batch=3,
        max_wait_s=0.25,
        threads=5,
        max_inflight_batches=4,
        output_format="jpg",
        png_level=6,
        jpeg_quality=80,
        max_bytes=1234,
        max_pixels=5678,
        allow_hardlinks=True,
        fsync=True,
        metrics_port=9100,
        metrics_host="0.0.0.0",
        idle_exit_s=2.5,
        max_age_s=30.0,
        image_timeout_s=7.0,
        target_latency_s=0.75,
        max_outage_s=60.0,
        max_stuck_threads=3,
        max_attempts=4,
        max_poll_interval_ms=90000,
        connect_timeout_s=3.5,
        kafka_config=str(tmp_path / "client.properties"),
        topic_configs=("refs:retention.ms=1000", "min.insync.replicas=2"),
        replication_factor=3,
        exactly_once=True,
        partitions=(0, 2),
        worker_id="w",
    )


def test_every_setting_has_a_flag_help_and_environment_variable() -> None:
    for f in cfg.settings():
        flag = f.metadata["flag"]
        assert flag.startswith("--") and f.metadata["help"], f.name
        assert f.metadata["env"] == "IMGSTREAM_" + flag[2:].upper().replace("-", "_")
        assert flag in WORK_FLAGS, flag
    # every field but the process's own id is a setting
    assert {f.name for f in dataclasses.fields(WorkerConfig)} - set(NAMES) == {"worker_id"}


def test_the_worker_command_line_rebuilds_the_config(tmp_path) -> None:
    config = _unusual(tmp_path)
    differs = [
        n
        for n in NAMES
        if getattr(config, n) == getattr(_parse(["--bootstrap", "b", "--out", "o"]), n)
    ]
    assert differs == [], "the fixture must change every setting"
    assert dataclasses.replace(_parse(to_args(config)), worker_id="w") == config
    argv = worker_command(config)
    assert argv[1:4] == ["-m", "imgstream.cli", "work"]
    assert dataclasses.replace(_parse(argv[4:]), worker_id="w") == config


def test_flags_beat_the_environment_which_beats_defaults(monkeypatch) -> None:
    base = ["--bootstrap", "b", "--out", "o"]
    assert _parse(base).max_batch == 16
    monkeypatch.setenv("IMGSTREAM_MAX_BATCH", "7")
    monkeypatch.setenv("IMGSTREAM_CONNECT_TIMEOUT", "2.5")
    assert _parse(base).max_batch == 7
    assert _parse(base).connect_timeout_s == 2.5
    assert _parse([*base, "--max-batch", "9"]).max_batch == 9


def test_the_cli_and_the_config_agree_on_defaults() -> None:
    parsed = _parse(["--bootstrap", "b", "--out", "o"])
    plain = WorkerConfig(bootstrap="b", out_dir=parsed.out_dir)
    assert dataclasses.replace(parsed, worker_id="") == dataclasses.replace(plain, worker_id="")
    assert parsed.threads == cfg.default_threads()


BAD = {
    "bootstrap": "",
    "out_dir": "",
    "max_batch": 0,
    "max_wait_s": -1.0,
    "threads": 0,
    "max_inflight_batches": 0,
    "output_format": "gif",
    "png_level": 10,
    "jpeg_quality": 0,
    "max_bytes": 0,
    "max_pixels": 0,
    "metrics_port": 70000,
    "idle_exit_s": 0.0,
    "max_age_s": 0.0,
    "image_timeout_s": -1.0,
    "target_latency_s": 0.0,
    "max_outage_s": 0.0,
    "max_stuck_threads": -1,
    "max_poll_interval_ms": 10,
    "connect_timeout_s": 0.0,
    "roots": (),
    "topic_configs": ("dlq:retention.msec=1",),
    "replication_factor": 0,
    "partitions": (0, -1),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_names_a_flag_that_exists(tmp_path, name) -> None:
    good = WorkerConfig(bootstrap="b", out_dir=str(tmp_path), roots=(str(tmp_path),))
    good.validate()
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(good, **{name: BAD[name]}).validate()
    named = FLAG.findall(str(info.value))
    assert named, str(info.value)
    assert set(named) <= WORK_FLAGS, str(info.value)


def test_every_flag_in_a_validation_message_exists_on_work() -> None:
    source = inspect.getsource(WorkerConfig.validate)
    named = set(FLAG.findall(source))
    assert len(named) >= len(BAD) - 1  # the scan sees the messages
    assert named <= WORK_FLAGS, named - WORK_FLAGS


def test_fixed_partitions_refuse_exactly_once(tmp_path) -> None:
    config = WorkerConfig(bootstrap="b", out_dir=str(tmp_path), roots=(str(tmp_path),))
    dataclasses.replace(config, partitions=(0, 1)).validate()
    with pytest.raises(ConfigError, match="--partition cannot be used with --exactly-once"):
        dataclasses.replace(config, partitions=(0,), exactly_once=True).validate()


def test_a_root_that_is_not_a_directory_is_named(tmp_path) -> None:
    config = WorkerConfig(bootstrap="b", out_dir="o", roots=(str(tmp_path / "missing"),))
    with pytest.raises(ConfigError, match="--root"):
        config.validate()


def _all_flags(group: click.Group) -> set[str]:
    flags: set[str] = set()
    for command in group.commands.values():
        if isinstance(command, click.Group):
            flags |= _all_flags(command)
        else:
            flags |= {opt for p in command.params for opt in p.opts}
    return flags


def _config_error_texts() -> dict[str, str]:
    """The literal text of every ConfigError raised in the package, by file."""
    import imgstream
    import imgstream.consumers
    import imgstream.producers

    files = {
        path
        for package in (imgstream, imgstream.producers, imgstream.consumers)
        for path in Path(package.__file__ or "").parent.rglob("*.py")
    }
    texts: dict[str, str] = {}
    for path in sorted(files):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("ConfigError", "SpecError")
            ):
                parts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
                texts[f"{path.name}:{node.lineno}"] = " ".join(str(p) for p in parts)
    return texts


def test_every_flag_in_any_config_error_exists() -> None:
    texts = _config_error_texts()
    assert any("--fps" in t for t in texts.values())  # the scan reaches producers too
    every = _all_flags(cli)
    for where, text in texts.items():
        assert set(FLAG.findall(text)) <= every, (where, text)


def test_opencv_pixel_ceiling_is_the_largest_tiled_source() -> None:
    import os

    from imgstream import _cv
    from imgstream.config import MAX_SOURCE_PIXELS

    assert _cv.HARD_MAX_PIXELS == MAX_SOURCE_PIXELS
    assert os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] == str(MAX_SOURCE_PIXELS)
