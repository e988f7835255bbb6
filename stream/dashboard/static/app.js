// The live page: polls /api/state every 2 s and updates the DOM in place.
"use strict";

const POLL_MS = 2000;
const THUMB_W = 320;
let failureType = "";
const charts = {};
const sourceViews = new Map();
const cameraViews = new Map();
const CAMERA_CHART_H = 90;

function $(id) { return document.getElementById(id); }

function setText(id, text) {
  const node = $(id);
  if (node.textContent !== text) node.textContent = text;
}

function renderTotals(t) {
  setText("total-refs", fmtNum(t.refs, 0));
  setText("total-ok", fmtNum(t.ok, 0));
  setText("total-failed", fmtNum(t.failed, 0));
  setText("total-rate-now", fmtNum(t.images_per_s_now));
  setText("total-rate-run", fmtNum(t.images_per_s_run));
  setText("total-mps", fmtNum(t.megapixels_per_s));
  setText("total-p50", fmtMs(t.latency_p50_ms));
  setText("total-p99", fmtMs(t.latency_p99_ms));
  const list = $("total-failures");
  clear(list);
  for (const [type, n] of Object.entries(t.failures || {})) {
    list.append(el("li", {}, el("span", { cls: "f-type", text: type }), " " + fmtNum(n, 0)));
  }
}

function chart(id, label, color) {
  if (charts[id]) return charts[id];
  const host = $(id);
  const opts = {
    width: Math.max(240, host.clientWidth || 400),
    height: 180,
    legend: { show: false },
    series: [{}, { label: label, stroke: color, width: 2, spanGaps: true, points: { show: true, size: 5 } }],
    axes: [{}, { size: 60 }],
  };
  charts[id] = new uPlot(opts, [[], []], host);
  return charts[id];
}

function plot(id, label, color, xs, ys) {
  const u = chart(id, label, color);
  u.setData([xs, ys.map((v) => (v === null || v === undefined ? null : v))]);
  // one point (a short run) would otherwise stretch the time axis over years
  if (xs.length === 1) u.setScale("x", { min: xs[0] - 300, max: xs[0] + 300 });
}

function renderSeries(series) {
  const xs = series.map((p) => p.t);
  plot("chart-throughput", "images/s", "#2b6cb0", xs, series.map((p) => p.images_per_s));
  plot("chart-latency", "mean latency ms", "#c05621", xs, series.map((p) => p.mean_latency_ms));
}

function renderMetrics(m) {
  const section = $("metrics-section");
  if (!m) { section.hidden = true; return; }
  section.hidden = false;
  const xs = m.series.map((p) => p.t);
  plot("chart-scrape-throughput", "images/s", "#2f855a", xs, m.series.map((p) => p.images_per_s));
  plot("chart-scrape-latency", "mean latency ms", "#9b2c2c", xs, m.series.map((p) => p.mean_latency_ms));
  const body = $("lag").tBodies[0];
  clear(body);
  const max = Math.max(1, ...Object.values(m.lag));
  for (const [tp, n] of Object.entries(m.lag)) {
    const bar = el("div", { cls: "bar" });
    bar.style.width = (100 * n / max) + "%";
    body.append(el("tr", { cls: "lag-row" }, el("td", { cls: "mono", text: tp }), el("td", { text: fmtNum(n, 0) }), el("td", { cls: "barcell" }, bar)));
  }
  setText("metrics-errors", (m.errors || []).length ? "scrape errors: " + m.errors.join("; ") : "");
}

function kvRow(label, cls) {
  const value = el("td", { cls: cls, text: "–" });
  return [el("tr", {}, el("th", { text: label }), value), value];
}

function cameraView(name) {
  const state = el("span", { cls: "cam-connected", text: "–" });
  const [fpsRow, fps] = kvRow("frames/s stored", "cam-fps");
  const [ageRow, age] = kvRow("last frame", "cam-age");
  const [droppedRow, dropped] = kvRow("dropped", "cam-dropped");
  const [motionRow, motionNow] = kvRow("motion now", "cam-motion-now");
  const chartHost = el("div", { cls: "cam-motion" });
  const node = el("div", { cls: "card camera" },
    el("h3", {}, el("span", { cls: "cam-name", text: name }), state),
    el("table", { cls: "kv cam-kv" }, el("tbody", {}, fpsRow, ageRow, droppedRow, motionRow)),
    chartHost);
  node.dataset.camera = name;
  return { node: node, state: state, fps: fps, age: age, dropped: dropped, motionNow: motionNow, chartHost: chartHost, chart: null };
}

function motionChart(view) {
  if (view.chart) return view.chart;
  const opts = {
    width: Math.max(200, view.chartHost.clientWidth || 240),
    height: CAMERA_CHART_H,
    legend: { show: false },
    series: [{}, { label: "motion ratio", stroke: "#805ad5", width: 1.5, spanGaps: true, points: { show: false } }],
    axes: [{ size: 30 }, { size: 45 }],
  };
  view.chart = new uPlot(opts, [[], []], view.chartHost);
  return view.chart;
}

function renderCameras(cams) {
  cams = cams || [];
  $("cameras-section").hidden = cams.length === 0;
  const host = $("cameras");
  const seen = new Set();
  for (const c of cams) {
    const key = String(c.camera);
    seen.add(key);
    let view = cameraViews.get(key);
    if (!view) {
      view = cameraView(key);
      host.append(view.node);
      cameraViews.set(key, view);
    }
    const known = c.connected === true || c.connected === false;
    view.state.textContent = known ? (c.connected ? "connected" : "disconnected") : "–";
    view.state.className = "cam-connected" + (known ? (c.connected ? " up" : " down") : "");
    view.fps.textContent = fmtNum(c.fps, 1);
    view.age.textContent = c.last_frame_age_s === null || c.last_frame_age_s === undefined ? "–" : fmtNum(c.last_frame_age_s, 1) + " s ago";
    view.dropped.textContent = fmtNum(c.dropped, 0);
    view.motionNow.textContent = fmtNum(c.motion_now, 3);
    const points = c.motion || [];
    view.chartHost.hidden = points.length === 0;
    if (points.length) {
      const u = motionChart(view);
      const xs = points.map((p) => p[0]);
      u.setData([xs, points.map((p) => p[1])]);
      if (xs.length === 1) u.setScale("x", { min: xs[0] - 60, max: xs[0] + 60 });
    }
  }
  for (const [key, view] of cameraViews) {
    if (seen.has(key)) continue;
    if (view.chart) view.chart.destroy();
    view.node.remove();
    cameraViews.delete(key);
  }
}

function card(item) {
  return el("a", { cls: "card-img", href: imageUrl(item.id, item.p), title: String(item.uri || "") },
    el("div", { cls: "pair" }, figure(item, "in", THUMB_W), figure(item, "out", THUMB_W)),
    el("div", { cls: "caption mono", text: String(item.id) }),
    el("div", { cls: "caption muted", text: fmtTime(item.ts) + "  " + fmtMs(item.latency_ms) + "  " + (item.boxes || []).length + " detections" }));
}

function renderSources(sources) {
  const host = $("sources");
  if (sources.length && !sourceViews.size) clear(host);
  for (const s of sources) {
    const key = String(s.source);
    let view = sourceViews.get(key);
    if (!view) {
      const counts = el("span", { cls: "muted" });
      const grid = el("div", { cls: "grid" });
      const section = el("div", { cls: "source" }, el("h3", {}, el("span", { text: s.source === null ? "(no source)" : key }), " ", counts), grid);
      host.append(section);
      view = { counts: counts, grid: grid, sig: "" };
      sourceViews.set(key, view);
    }
    const fails = Object.entries(s.failures).map(([t, n]) => t + " " + n).join(", ");
    view.counts.textContent = "ok " + s.ok + " · failed " + s.failed + (fails ? " (" + fails + ")" : "");
    const sig = s.latest.map((i) => i.id + "|" + i.p + "|" + i.has_in + i.has_out).join(",");
    if (sig !== view.sig) {
      view.sig = sig;
      clear(view.grid);
      for (const item of s.latest) view.grid.append(card(item));
    }
  }
}

function renderFailures(f) {
  const select = $("failure-type");
  const want = [""].concat(Object.keys(f.types));
  const have = Array.from(select.options).map((o) => o.value);
  if (want.join("\n") !== have.join("\n")) {
    clear(select);
    for (const t of want) {
      select.append(el("option", { value: t, text: t ? t + " (" + f.types[t] + ")" : "all" }));
    }
    select.value = want.includes(failureType) ? failureType : "";
  }
  const body = $("failures").tBodies[0];
  clear(body);
  for (const r of f.latest) {
    body.append(el("tr", { cls: "failure-row" },
      el("td", { cls: "nowrap", text: fmtTime(r.ts) }),
      el("td", {}, el("span", { cls: "f-type", text: String(r.type) })),
      el("td", { cls: "mono" }, r.id === null ? "(unparsed)" : el("a", { href: imageUrl(r.id, r.p), text: String(r.id) })),
      el("td", { cls: "mono uri", text: r.uri === null || r.uri === undefined ? "" : String(r.uri) }),
      el("td", { text: String(r.message || "") })));
  }
  if (!f.latest.length) body.append(el("tr", {}, el("td", { colspan: 5, cls: "muted", text: "no failures" })));
}

function renderTiles(tiles) {
  $("tiles-section").hidden = tiles.length === 0;
  const body = $("tiles").tBodies[0];
  clear(body);
  for (const t of tiles) {
    const pct = t.total ? Math.min(100, 100 * t.done / t.total) : 0;
    const bar = el("div", { cls: "bar" });
    bar.style.width = pct + "%";
    const status = t.fused ? card(t.fused) : el("span", { cls: t.incomplete ? "f-type" : "muted", text: t.incomplete ? "incomplete: " + t.incomplete : "waiting for tiles" });
    body.append(el("tr", { cls: "tile-row" },
      el("td", { cls: "mono" }, el("a", { href: imageUrl(t.parent, t.p), text: String(t.parent) })),
      el("td", {}, el("div", { cls: "progress" }, bar), el("span", { text: t.done + " / " + t.total })),
      el("td", {}, status)));
  }
}

function render(s) {
  setText("db", s.db);
  renderTotals(s.totals);
  renderSeries(s.series);
  renderMetrics(s.metrics);
  renderCameras(s.cameras);
  renderSources(s.sources);
  renderFailures(s.failures);
  renderTiles(s.tiles);
  document.body.dataset.version = String(s.version);
}

async function refresh() {
  try {
    const resp = await fetch("/api/state?failure_type=" + encodeURIComponent(failureType), { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
    const st = $("status");
    st.textContent = "live · " + new Date().toLocaleTimeString();
    st.className = "status live";
  } catch (e) {
    const st = $("status");
    st.textContent = "disconnected (" + e.message + ")";
    st.className = "status down";
  }
}

async function loop() {
  await refresh();
  setTimeout(loop, POLL_MS);
}

$("failure-type").addEventListener("change", (ev) => {
  failureType = ev.target.value;
  refresh();
});

window.addEventListener("resize", () => {
  for (const [id, c] of Object.entries(charts)) {
    c.setSize({ width: Math.max(240, $(id).clientWidth || 400), height: 180 });
  }
  for (const view of cameraViews.values()) {
    if (view.chart) view.chart.setSize({ width: Math.max(200, view.chartHost.clientWidth || 240), height: CAMERA_CHART_H });
  }
});

loop();
