"""The documentation's reference pages list everything the code's registries hold.

The tables come from docs/hooks.py (run by `make docs`); these tests compare what
it generates with the registries themselves, so nothing can be left out.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import click
import pytest
from prometheus_client import CollectorRegistry

import imgstream
from imgstream import api, config
from imgstream.cli import cli
from imgstream.errors import exit_codes
from imgstream.metrics import CameraMetrics, Metrics
from imgstream.ops import build_registry
from imgstream.schema import records

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_operation_has_its_section_and_parameters(hooks: ModuleType) -> None:
    text = hooks.operations_md()
    for op in build_registry():
        assert f"### `{op.name}` {{ #op-{op.name} }}" in text
        section = text.split(f"{{ #op-{op.name} }}")[1].split("\n### ")[0]
        for param in op.params:
            assert f"| `{param.name}` | {param.type.__name__} |" in section, (op.name, param.name)


def test_every_metric_is_listed(hooks: ModuleType) -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    CameraMetrics(registry)
    names = {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}
    text = hooks.metrics_md()
    listed = set(re.findall(r"^\| `(imgstream_[a-z_]+)` \|", text, re.MULTILINE))
    assert listed == names
    assert "| `imgstream_failures_total` | counter | `type` |" in text


def test_every_setting_and_its_variable_is_listed(hooks: ModuleType) -> None:
    text = hooks.settings_md()
    for field in config.settings():
        flag, env = field.metadata["flag"], field.metadata["env"]
        assert f"| `{flag}` | `{env}` |" in text
        assert env == config.env_name(flag)


def _envvars(cmd: click.Command) -> set[str]:
    found = set()
    for param in cmd.params:
        envvar = getattr(param, "envvar", None)
        found |= {envvar} if isinstance(envvar, str) else set(envvar or ())
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            found |= _envvars(sub)
    return found


def test_every_environment_variable_of_every_command_is_listed(hooks: ModuleType) -> None:
    text = hooks.settings_md()
    for env in _envvars(cli):
        assert f"`{env}`" in text, env


def _commands(cmd: click.Command, path: str) -> list[tuple[str, click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            out += _commands(sub, f"{path} {name}")
    return out


def test_every_command_and_option_is_in_the_built_cli_page() -> None:
    """mkdocs-click renders the click commands; the built page names each one and option."""
    page = ROOT / "site" / "reference" / "cli.html"
    if not page.is_file():
        pytest.skip("site/ not built: `make docs` (make test builds it first)")
    html = page.read_text()
    for path, cmd in _commands(cli, "imgstream"):
        assert path in html, path
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.opts[0] in html, (path, param.opts[0])


def test_the_cli_page_renders_every_command_from_click() -> None:
    text = (DOCS / "reference" / "cli.md").read_text()
    assert ":module: imgstream.cli" in text and ":command: cli" in text
    assert ":list_subcommands: true" in text


def test_every_record_field_is_listed(hooks: ModuleType) -> None:
    text = hooks.records_md()
    classes = [
        c for c in vars(records).values() if isinstance(c, type) and dataclasses.is_dataclass(c)
    ]
    assert {"ImageRef", "Result", "BatchSummary", "Failure"} <= {c.__name__ for c in classes}
    for cls in classes:
        section = text.split(f"### `{cls.__name__}`")[1].split("\n### ")[0]
        for field in dataclasses.fields(cls):
            assert f"| `{field.name}` |" in section, (cls.__name__, field.name)


def test_every_exit_code_is_listed_and_matches_the_cli_help(hooks: ModuleType) -> None:
    from imgstream.cli.app import exit_codes_text

    text = hooks.exit_codes_md()
    help_text = exit_codes_text()
    for code, meaning, _ in exit_codes():
        assert f"| {code} | {meaning} |" in text
        assert re.search(rf"^  {code} +{re.escape(meaning)}$", help_text, re.MULTILINE), code
    for cls in (imgstream.ConfigError, imgstream.BrokerError, imgstream.DeliveryError):
        assert f"`{cls.__name__}`" in text


def test_every_public_api_name_is_documented(hooks: ModuleType) -> None:
    text = hooks.python_api_md()
    for name in api.__all__:
        assert f"### `imgstream.{name}`" in text
        assert name in imgstream.__all__


def test_every_reference_marker_is_known_and_used(hooks: ModuleType) -> None:
    used = set()
    for page in DOCS.rglob("*.md"):
        used |= set(hooks.markers(page.read_text()))
    assert used == set(hooks.GENERATORS)


def test_every_builtin_names_what_it_equals_and_the_concepts_tables_list_them(
    hooks: ModuleType,
) -> None:
    """What each built-in equals in OpenCV comes from its ``@imgstream.op(equals=...)``."""
    builtins = list(build_registry(()))
    assert [op.name for op in builtins if not op.equals.strip()] == []
    tables = "\n".join(
        hooks.GENERATORS[f"equals-{kind}"]() for kind in ("image", "analysis", "batch")
    )
    named = re.findall(r"^\| \[`([a-z]+)[:`]", tables, re.MULTILINE)
    assert sorted(named) == sorted(op.name for op in builtins)
    page = (DOCS / "concepts" / "operations.md").read_text()
    assert all(
        f"<!-- reference: equals-{kind} -->" in page for kind in ("image", "analysis", "batch")
    )
    section = hooks.operations_md().split("{ #op-blur }")[1].split("\n### ")[0]
    assert "**Equals** `cv2.GaussianBlur(img, (k, k), 0)`." in section


def test_the_readme_is_short_and_every_figure_links_to_its_page_and_command() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert "make demo" in text and "make test" in text and "make docs" in text
    rows = [line for line in text.splitlines() if re.match(r"^\| [^w-]", line)]
    figures = [r for r in rows if re.search(r"\d", r.split("|")[2])]
    assert len(figures) >= 5
    for row in figures:
        page = re.search(r"\]\((docs/[a-z/-]+\.md)\)", row)
        assert page is not None and (ROOT / page.group(1)).is_file(), row
        assert re.search(r"`(make [a-z-]+|\.venv/bin/python benchmarks/\w+\.py)", row), row
    for link in re.findall(r"\]\(((?:docs/)?[\w/.-]+\.md)\)", text):
        assert (ROOT / link).is_file(), link
