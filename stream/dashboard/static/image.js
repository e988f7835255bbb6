// The page of one record: /image/ID[?p=PIPELINE_HASH].
"use strict";

const FULL_W = 1280;

function row(body, key, value) {
  if (value === undefined || value === null || value === "") return;
  const v = value instanceof Node ? value : el("span", { text: String(value) });
  body.append(el("tr", {}, el("th", { text: key }), el("td", { cls: "mono" }, v)));
}

async function main() {
  const id = decodeURIComponent(location.pathname.slice("/image/".length));
  const p = new URLSearchParams(location.search).get("p") || "";
  document.getElementById("record-id").textContent = id;
  document.title = "imgstream · " + id;
  const resp = await fetch("/api/record?" + new URLSearchParams({ id: id, p: p }).toString(), { cache: "no-store" });
  if (!resp.ok) {
    document.getElementById("images").append(el("p", { cls: "f-type", text: "no such record" }));
    return;
  }
  const data = await resp.json();
  const r = data.record;
  const images = document.getElementById("images");
  if (data.item) {
    images.append(figure(data.item, "in", FULL_W), figure(data.item, "out", FULL_W));
  }
  const body = document.getElementById("summary").tBodies[0];
  row(body, "kind", r.kind);
  if (r.kind === "failure" && r.error) {
    row(body, "error type", el("span", { cls: "f-type", text: String(r.error.type) }));
    row(body, "reason", r.error.message);
    row(body, "attempts", r.attempts);
  }
  row(body, "uri", r.uri);
  row(body, "source", r.source);
  row(body, "output", r.output_uri);
  row(body, "pipeline", r.pipeline);
  row(body, "pipeline hash", data.p);
  if (r.width) row(body, "size", r.width + " × " + r.height + " × " + r.channels);
  row(body, "bytes in", r.bytes_in);
  row(body, "time", fmtTime(r.ts));
  row(body, "latency", r.latency_ms === undefined ? null : fmtMs(r.latency_ms));
  row(body, "batch", r.batch_id);
  row(body, "worker", r.worker);
  if (r.tile) row(body, "tile of", el("a", { href: imageUrl(r.tile.parent, data.p), text: String(r.tile.parent) }));
  const timings = document.getElementById("timings").tBodies[0];
  const stages = Object.entries(r.timings || {});
  document.getElementById("timings-box").hidden = stages.length === 0;
  for (const [stage, s] of stages) row(timings, stage, fmtNum(Number(s) * 1000, 1) + " ms");
  document.getElementById("outputs").textContent = JSON.stringify(r.outputs || {}, null, 2);
  document.getElementById("lineage").textContent = JSON.stringify(r.lineage || {}, null, 2);
  document.getElementById("record").textContent = JSON.stringify(r, null, 2);
  const links = document.getElementById("links");
  for (const other of data.others) {
    links.append(el("li", {}, "same id, pipeline ", el("a", { href: imageUrl(id, other), text: String(other) })));
  }
  for (const t of data.tiles) {
    links.append(el("li", {}, "tile ", el("a", { href: imageUrl(t.id, t.p), text: String(t.id) })));
  }
  document.getElementById("links-box").hidden = links.children.length === 0;
  document.body.dataset.loaded = "1";
}

main();
