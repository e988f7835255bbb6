"""A plugin installed beside imgstream, used as a user would: listed, run, validated.

The example plugin (examples/imgstream-example-plugin) is pip-installed into
a folder of its own and put on PYTHONPATH for the ``imgstream`` processes,
so the test venv never holds it; ``run`` starts its workers as separate
processes, which load it the same way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.fixtures.plugins import env_with

DIST = "imgstream-example-plugin"


def imgstream(
    *args: str, sites: tuple[Path, ...], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``imgstream ARGS...`` in a subprocess that sees the plugins in ``sites``."""
    return subprocess.run(
        [sys.executable, "-m", "imgstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_with(*sites),
    )


def posterize(img: np.ndarray, levels: int) -> np.ndarray:
    """The example's posterize, computed here independently, value by value."""
    step = 255 / (levels - 1)
    bucket = np.floor(img.astype(np.float64) * levels / 256)
    return np.floor(bucket * step + 1e-9).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(photos, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for p in photos:
        shutil.copy(p, root / p.name)
    return root


def test_ops_lists_the_plugin_with_its_distribution_and_version(example_plugin_site) -> None:
    listing = imgstream("ops", sites=(example_plugin_site,))
    assert listing.returncode == 0, listing.stderr
    _, _, plugin = listing.stdout.partition(f"from the plugin {DIST} 0.1.0:\n")
    names = [line.split()[0] for line in plugin.splitlines()]
    assert names == ["batch_stats", "mean_color", "posterize"]
    assert "gray" in listing.stdout.partition("from the plugin")[0]  # built-ins first

    one = imgstream("ops", "posterize", sites=(example_plugin_site,))
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines()[:3] == [
        f"posterize  (image, {DIST} 0.1.0)  Reduce every channel to ``levels`` evenly spaced"
        " values.",
        "  equals: a lookup table, (v * levels // 256) * 255 // (levels - 1)",
        "  levels: int = 4  range [2, 256]  values per channel",
    ]
    assert (
        "order: str = 'bright'  one of bright|dark"
        in imgstream("ops", "batch_stats", sites=(example_plugin_site,)).stdout
    )


def test_run_applies_the_plugin_exactly_in_every_worker(
    example_plugin_site, folder, tmp_path
) -> None:
    out = tmp_path / "out"
    spec = "posterize:levels=4|mean_color"
    proc = imgstream(
        "run", str(folder), "--out", str(out), "--ops", spec, "--workers", "2",
        "--max-wait", "0.1", sites=(example_plugin_site,),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    results = [r for r in records if r["kind"] == "result"]
    # every result comes from a worker process `run` started: each loaded the plugin itself
    assert len(results) == len(list(folder.iterdir()))
    for r in results:
        assert r["pipeline"] == (
            f"posterize@{DIST}==0.1.0:levels=4|mean_color@{DIST}==0.1.0:digits=2"
        )
        expected = posterize(cv2.imread(r["uri"]), 4)
        got = cv2.imread(r["output_uri"], cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, expected), r["uri"]
        means = expected.reshape(-1, 3).mean(axis=0)
        assert r["outputs"]["mean_color"]["mean"] == [round(float(m), 2) for m in means]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("posterize:levels=x", "operation 'posterize': parameter 'levels' expects int, got 'x'"),
        ("posterize:levels=1", "operation 'posterize': parameter 'levels' must be >= 2, got 1"),
        ("posterize:level=3", "operation 'posterize' has no parameter 'level'; valid: levels"),
        ("batch_stats:order=up", "parameter 'order' must be one of bright, dark, got 'up'"),
        ("posterize@imgstream-example-plugin==9.9", "is from imgstream-example-plugin 0.1.0"),
    ],
)
def test_a_bad_plugin_parameter_is_exit_2_with_one_line(
    example_plugin_site, tmp_path, spec, message
) -> None:
    (tmp_path / "in").mkdir()
    proc = imgstream(
        "run", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--ops", spec,
        sites=(example_plugin_site,), timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr


def test_a_plugin_that_fails_to_import_is_exit_2_with_one_line(
    example_plugin_site, broken_plugin_site, tmp_path
) -> None:
    expected = (
        "error: plugin 'broken' (imgstream-broken-plugin 1.0): cannot import module "
        "imgstream_broken_plugin: RuntimeError: this plugin is broken\n"
    )
    sites = (example_plugin_site, broken_plugin_site)
    for args in (
        ("ops",),
        ("run", str(tmp_path), "--out", str(tmp_path / "out"), "--ops", "gray"),
    ):
        proc = imgstream(*args, sites=sites, timeout=60)
        assert (proc.returncode, proc.stderr) == (2, expected), args
        assert "Traceback" not in proc.stdout + proc.stderr


def test_a_batch_op_sees_the_micro_batch_in_one_call(example_plugin_site, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(24):
        cv2.imwrite(str(folder / f"{i:02}.png"), rng.integers(0, 256, (16, 16, 3), np.uint8))
    out = tmp_path / "out"
    proc = imgstream(
        "run", str(folder), "--out", str(out), "--ops", "batch_stats", "--max-batch", "8",
        "--max-wait", "1", "--partitions", "1", sites=(example_plugin_site,),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    results = [r for r in records if r["kind"] == "result"]
    assert len(results) == 24
    seen = [r["outputs"]["batch_stats"]["batch_size"] for r in results]
    assert max(seen) > 1, seen
    sizes = {b["batch_id"]: b["size"] for b in records if b["kind"] == "batch"}
    for r in results:  # the call saw the whole micro-batch (every image of it succeeded)
        assert r["outputs"]["batch_stats"]["batch_size"] == sizes[r["batch_id"]]
    assert all(r["lineage"]["versions"].get(DIST) == "0.1.0" for r in results)
