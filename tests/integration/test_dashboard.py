"""The Grafana dashboard against a live worker's /metrics and a real Prometheus.

A worker on the embedded broker processes good and broken images, so every
labelled series exists; each metric the dashboard queries must be one of its
samples, with the labels the query matches and groups by. Then Debian's
Prometheus scrapes a live worker on loopback (the compose scrape job, its
target made static) and answers dashboard queries with data. The camera
panels are checked the same way against a live capture's /metrics (a real
ffmpeg stream on loopback).
"""

from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.deploy import (
    PROMETHEUS_CONFIG,
    TARGET_LABELS,
    dashboard_exprs,
    exposition_series,
    groupings,
    load_yaml,
    need_tool,
    scrape,
    selectors,
)
from tests.helpers import refs_for, wait_until

#: The prefix of what `imgstream capture` exports (checked against a capture, not a worker).
CAMERA = "imgstream_camera_"


def start_worker(topics: Any, background: Any, tmp_path: Path) -> tuple[Any, str]:
    """A worker serving /metrics on a port of its choosing; (process, metrics URL)."""
    args = topics.worker_args(tmp_path / "out", tmp_path / "in", "--max-wait", "0.1")
    proc = background("-v", *args, "--metrics-port", "0", name="worker")
    out = proc.wait_for_output("metrics on http://", timeout=60)
    match = re.search(r"metrics on (http://\S+/metrics)", out)
    assert match, out
    return proc, match[1]


def families(text: str) -> set[str]:
    """Metric family names declared in an exposition (# TYPE lines), less ``*_created``.

    prometheus_client declares each counter's and histogram's creation time as a
    family of its own; it is bookkeeping, not a measurement to chart.
    """
    declared = re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE)
    return {name for name in declared if not name.endswith("_created")}


def test_dashboard_queries_only_what_a_worker_exports(
    topics, background, write_images, tmp_path
) -> None:
    paths = write_images(tmp_path / "in", 6)
    bad = tmp_path / "in" / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    topics.produce(refs_for([*paths, bad]))
    proc, url = start_worker(topics, background, tmp_path)
    topics.stream().wait_for({p.stem for p in paths} | {"bad"}, timeout_s=60)

    def settled() -> str | None:
        # Lag gauges and commit counters appear on their own period.
        text = scrape(url)
        series = exposition_series(text)
        ready = "imgstream_consumer_lag_seconds" in series and "imgstream_commits_total" in series
        return text if ready else None

    text = wait_until(settled, 30, interval=0.2, what="lag and commit series on /metrics")
    assert proc.stop() == 0
    check_panels(text, "a worker", lambda name: not name.startswith(CAMERA))


def check_panels(text: str, exporter: str, mine: Callable[[str], bool]) -> None:
    """Every metric the dashboard queries that ``mine`` claims is in the exposition
    ``text``, with the labels it matches and groups by; and each family of ``text``
    is on a panel."""
    series = exposition_series(text)
    used: set[str] = set()
    for title, expr in dashboard_exprs():
        chosen = [(name, matchers) for name, matchers in selectors(expr) if mine(name)]
        for name, matchers in chosen:
            assert name in series, f"{title}: {name} is not in {exporter}'s /metrics ({expr})"
            used.add(name)
            for label, value in matchers.items():
                assert any(s.get(label) == value for s in series[name]), (
                    f"{title}: no {name} sample has {label}={value!r}"
                )
        for by, below in groupings(expr):
            if not all(mine(name) for name in below):
                continue
            labels = {label for name in below for s in series[name] for label in s}
            unknown = set(by) - labels - TARGET_LABELS
            assert not unknown, f"{title}: grouped by {unknown}, which {below} do not carry"
    # And the other way: what it exports is on the dashboard.
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    unshown = families(text) - {f for f in families(text) if f in shown or f + "_total" in shown}
    assert not unshown, f"{exporter} exports these, on no panel: {unshown}"


def test_camera_panels_query_only_what_a_capture_exports(
    topics, background, stream_server, clip, tmp_path
) -> None:
    server = stream_server(clip)
    proc = background(
        *("capture", server.url, "--source", "door", "--fps", "2", "--store", str(tmp_path)),
        *("--bootstrap", topics.bootstrap, "--topic", topics.refs, "--metrics-port", "0"),
        name="capture",
    )
    out = proc.wait_for_output("metrics on http://", timeout=60)
    match = re.search(r"metrics on (http://\S+/metrics)", out)
    assert match, out

    def stored() -> str | None:
        text = scrape(match[1])
        return (
            text
            if 'imgstream_camera_frames_total{camera="door",outcome="stored"} 0' not in text
            else None
        )

    text = wait_until(stored, 60, interval=0.2, what="a stored frame on the capture's /metrics")
    assert proc.stop() == 0, proc.output()
    assert any(name.startswith(CAMERA) for _t, e in dashboard_exprs() for name, _m in selectors(e))
    check_panels(text, "a capture", lambda name: name.startswith(CAMERA))
    promtool = need_tool("promtool", "`make promtool` installs the Debian package prometheus")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def prometheus_config(target: str) -> dict[str, Any]:
    """The compose stack's Prometheus config, scraping ``target`` every second."""
    config = load_yaml(PROMETHEUS_CONFIG)
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "imgstream-worker"]
    config["scrape_configs"] = [job]
    del job["dns_sd_configs"]
    job["static_configs"] = [{"targets": [target]}]
    return config


def expr_of(title: str) -> str:
    """The first expression of the dashboard panel titled ``title``."""
    return next(expr for t, expr in dashboard_exprs() if t == title)


def test_prometheus_answers_dashboard_queries(
    topics, background, write_images, prometheus, tmp_path
) -> None:
    (tmp_path / "in").mkdir()
    proc, url = start_worker(topics, background, tmp_path)
    server = prometheus(prometheus_config(url.split("/")[2]))

    def scraped() -> bool:
        # A first sample before any image, so rate() sees the increase.
        return bool(server.query("imgstream_images_total"))

    wait_until(scraped, 30, interval=0.2, what=f"a scrape of {url}\n{server.output()}")
    (target,) = server.api("targets")["activeTargets"]
    assert target["health"] == "up" and target["labels"]["job"] == "imgstream-worker"
    paths = write_images(tmp_path / "in", 8)
    topics.produce(refs_for(paths))
    topics.stream().wait_for({p.stem for p in paths}, timeout_s=60)

    throughput = expr_of("Throughput by status")

    def answered() -> list[dict[str, Any]] | None:
        result = server.query(throughput)
        ok = [r for r in result if r["metric"].get("status") == "ok"]
        return result if ok and float(ok[0]["value"][1]) > 0 else None

    result = wait_until(answered, 30, interval=0.2, what=f"images/s > 0 from {throughput}")
    assert {r["metric"]["status"] for r in result} == {"ok", "failed"}
    (p99,) = server.query(expr_of("Latency p99"))
    assert 0 < float(p99["value"][1]) < math.inf
    assert proc.stop() == 0
