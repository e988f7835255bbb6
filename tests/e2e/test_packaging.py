"""The wheel installs one import package, ``imgstream``, and the tests use the installed one."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import imgstream

REPO = Path(__file__).resolve().parents[2]


def test_wheel_has_one_top_level_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("imgstream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"imgstream"}
    for module in (
        "imgstream/producers/files.py",
        "imgstream/consumers/worker.py",
        "imgstream/cli/__main__.py",
        "imgstream/ops/registry.py",
        "imgstream/kafka_io/clients.py",
    ):
        assert module in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "imgstream = imgstream.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_tests_import_the_installed_package() -> None:
    # The folders keep their names (stream/, producers/, consumers/); nothing
    # may import them under those names through the repository root.
    assert Path(imgstream.__file__).resolve().parent == REPO / "stream" or "site-packages" in (
        imgstream.__file__
    )
    probe = (
        "import importlib.util as u; "
        "print([u.find_spec(m) for m in ('stream', 'producers', 'consumers')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO / "tests",
        check=True,
    ).stdout
    assert out.strip() == "[None, None, None]"
