"""The package's folders are its architecture: each is small, and the docs map every module."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOTS = ("stream", "producers", "consumers")
MAX_MODULES = 12
ARCHITECTURE = ROOT / "docs" / "concepts" / "architecture.md"


def _packages() -> list[Path]:
    found = []
    for name in PACKAGE_ROOTS:
        found += sorted(p.parent for p in (ROOT / name).rglob("__init__.py"))
    return found


def _modules(package: Path) -> list[Path]:
    return sorted(p for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))


def test_the_package_roots_and_their_subpackages_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _packages()}
    assert {"stream", "stream/worker", "stream/io", "stream/ops/builtin", "producers"} <= names


@pytest.mark.parametrize("package", _packages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_folder_holds_more_than_about_twelve_modules(package: Path) -> None:
    modules = [m.name for m in _modules(package)]
    assert len(modules) <= MAX_MODULES, (
        f"{package.relative_to(ROOT)} holds {len(modules)} modules: split it by concern"
    )


def test_the_architecture_page_names_every_folder_and_module() -> None:
    page = ARCHITECTURE.read_text()
    missing = []
    for package in _packages():
        folder = package.relative_to(ROOT).as_posix()
        if f"{package.name}/" not in page:
            missing.append(folder + "/")
        missing += [f"{folder}/{m.name}" for m in _modules(package) if f"`{m.name}`" not in page]
    assert not missing, f"docs/concepts/architecture.md does not name: {missing}"


def test_every_subpackage_is_in_pyprojects_package_list() -> None:
    """setuptools installs the packages pyproject lists: a new folder must be there too."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    names = {
        "stream": "imgstream",
        "producers": "imgstream.producers",
        "consumers": "imgstream.consumers",
    }
    found = set()
    for package in _packages():
        base, *rest = package.relative_to(ROOT).parts
        found.add(".".join([names[base], *rest]))
    assert found == listed
