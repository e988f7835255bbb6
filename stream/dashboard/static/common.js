// Shared by both pages. Every string that comes from a record reaches the DOM
// through textContent or a property (never parsed as HTML), so a file named
// "<script>…" is shown as text, not run.
"use strict";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === "text") node.textContent = String(v);
    else if (k === "cls") node.className = v;
    else if (k === "href" || k === "src" || k === "alt" || k === "title" || k === "value") node[k] = String(v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function fmtNum(v, digits) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  return v.toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 2 : digits });
}

function fmtMs(v) {
  if (v === null || v === undefined) return "–";
  return v >= 10000 ? fmtNum(v / 1000, 1) + " s" : fmtNum(v, 0) + " ms";
}

function fmtTime(ms) {
  if (typeof ms !== "number") return "";
  const d = new Date(ms);
  return isNaN(d.getTime()) ? "" : d.toISOString().replace("T", " ").slice(0, 19);
}

function mediaUrl(side, id, p, w) {
  const q = new URLSearchParams({ side: side, id: String(id), p: String(p || ""), w: String(w) });
  return "/media?" + q.toString();
}

function imageUrl(id, p) {
  return "/image/" + encodeURIComponent(String(id)) + (p ? "?p=" + encodeURIComponent(String(p)) : "");
}

// An image (input or output side) with the record's detection boxes over it.
// Boxes are in the record's pixel space (width x height): placed in percent.
function figure(item, side, w) {
  const has = side === "in" ? item.has_in : item.has_out;
  const box = el("div", { cls: "frame" });
  if (has) {
    box.append(el("img", {
      src: mediaUrl(side, item.id, item.p, w),
      alt: (side === "in" ? "input " : "output ") + String(item.id),
      cls: "thumb-img",
    }));
  } else {
    box.append(el("div", { cls: "placeholder", text: side === "in" ? "input not served (no --root)" : "output not available" }));
  }
  const W = Number(item.width), H = Number(item.height);
  if (has && W > 0 && H > 0) {
    for (const b of item.boxes || []) {
      const r = el("div", { cls: "box box-" + String(b.kind), title: String(b.kind) });
      r.style.left = (100 * b.x / W) + "%";
      r.style.top = (100 * b.y / H) + "%";
      r.style.width = (100 * b.w / W) + "%";
      r.style.height = (100 * b.h / H) + "%";
      box.append(r);
    }
  }
  return el("figure", { cls: "side side-" + side }, box, el("figcaption", { text: side === "in" ? "input" : "output" }));
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}
