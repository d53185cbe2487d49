// explore.py's page script, served from its own route (/page.js): the Content-Security-Policy runs no
// inline script, so nothing a class name, path or config value inserts can run. Text goes in as text.
"use strict";
// The page's state; tests read it (window.explorer).
const S = { info: null, code: [], y: null, sweep: null, pending: null, inflight: false, lastMs: 0,
            ends: { a: null, b: null }, point: null, frames: 0 };
window.explorer = S;
// A sweep decodes every position of one slider in one batch; a model whose single decode takes longer than this
// (e.g. an autoregressive decoder) is asked one frame at a time instead, the latest position winning.
const SWEEP_IF_DECODE_MS = 100;
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const $ = (id) => document.getElementById(id);
// An element with properties (textContent, className, src, ...) and children (elements or text): never HTML.
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "data") Object.assign(e.dataset, v); else if (k === "style") Object.assign(e.style, v); else e[k] = v;
  }
  e.append(...children.map((c) => typeof c === "string" ? document.createTextNode(c) : c));
  return e;
}

function showError(message) { const e = $("error"); e.textContent = message; e.style.display = "block"; }
function clearError() { $("error").style.display = "none"; }

async function api(path, body, raw) {
  const opts = body === undefined ? {} : { method: "POST", body: raw ? body : JSON.stringify(body),
                                           headers: raw ? {} : { "Content-Type": "application/json" } };
  let r;
  try { r = await fetch(path, opts); } catch (e) {
    showError("the server does not answer: is explore.py still running?"); throw e;
  }
  let data;
  try { data = await r.json(); } catch (e) { data = { error: `the server answered ${r.status} without JSON` }; }
  if (!r.ok || data.error) { showError(data.error || `error ${r.status}`); throw new Error(data.error); }
  return data;
}

function label(c) { const n = S.info.class_names; return n && n[c] !== undefined ? n[c] : String(c); }
function stepIndex(v) {  // the slider position nearest a value
  const st = S.info.slider_steps; let best = 0;
  for (let i = 1; i < st.length; i++) if (Math.abs(st[i] - v) < Math.abs(st[best] - v)) best = i;
  return best;
}
function sweepKey(dim) { return JSON.stringify([dim, S.y, S.code.map((v, j) => j === dim ? null : v)]); }

// ---------------------------------------------------------------- the current code and its image
function setCode(code, image) {
  S.code = code.slice(); S.sweep = null;
  for (const dim of S.info.order) {
    const s = $(`z${dim}`); s.value = stepIndex(code[dim]); $(`v${dim}`).textContent = code[dim].toFixed(2);
  }
  if (image) { showImage(image, 0); } else { requestDecode(); }
}

function showImage(src, ms, t0) {
  $("main").src = src;
  S.frames += 1;
  const page = t0 === undefined ? "" : `; frame ${(performance.now() - t0).toFixed(1)} ms`;
  const how = ms === null ? "from the slider's batch" : ms < 0.05 ? "cached" : `decoded in ${ms.toFixed(1)} ms`;
  $("timing").textContent = `${how}${page}; the model takes ${S.lastMs.toFixed(1)} ms an image`;
}

// Latest wins: while one decode is in flight, a newer code replaces the queued one.
function requestDecode() {
  S.pending = { code: S.code.slice(), y: S.y, t0: performance.now() };
  if (!S.inflight) pump();
}
async function pump() {
  if (!S.pending) return;
  const job = S.pending; S.pending = null; S.inflight = true;
  try {
    const r = await api("/api/decode", { code: job.code, y: job.y });
    S.lastMs = r.decode_ms; S.point = r.point;
    if (!S.pending) { showImage(r.image, r.ms, job.t0); drawMap(); clearError(); }
  } catch (e) { /* shown */ } finally { S.inflight = false; }
  if (S.pending) pump();
}

async function loadSweep(dim) {
  const key = sweepKey(dim);
  if (S.sweep && S.sweep.key === key) return;
  if (S.lastMs > SWEEP_IF_DECODE_MS) return;  // a slow decoder: frame by frame only
  const want = { key, dim, images: null };
  S.sweep = want;
  try {
    const r = await api("/api/sweep", { code: S.code, dim, y: S.y });
    if (S.sweep === want) want.images = r.images;
  } catch (e) { /* shown */ }
}

function onSlider(dim, idx, t0) {
  const v = S.info.slider_steps[idx];
  S.code[dim] = v; $(`v${dim}`).textContent = v.toFixed(2);
  const sw = S.sweep;
  if (sw && sw.images && sw.dim === dim && sw.key === sweepKey(dim)) {
    showImage(sw.images[idx], null, t0);  // this position was decoded in the sweep
    S.point = null; drawMap();
  } else {
    requestDecode();
  }
}

function buildSliders() {
  const box = $("sliders"), n = S.info.slider_steps.length;
  for (const dim of S.info.order) {
    const s = el("input", { type: "range", id: `z${dim}`, min: "0", max: String(n - 1), step: "1", data: { dim } });
    box.appendChild(el("div", { className: "slider" },
      el("label", { htmlFor: `z${dim}` }, `z${dim} `, el("span", { className: "muted", textContent: `KL ${S.info.kl[dim].toFixed(2)}` })),
      s, el("span", { className: "v", id: `v${dim}` })));
    s.addEventListener("pointerdown", () => loadSweep(dim));
    s.addEventListener("focus", () => loadSweep(dim));
    s.addEventListener("input", () => onSlider(dim, Number(s.value), performance.now()));
  }
}

// ---------------------------------------------------------------- the map
function mapScale() {
  const sp = S.info.map.spread, c = $("map");
  return { sx: c.width / (7 * sp[0]), sy: c.height / (7 * sp[1]), w: c.width, h: c.height };
}
function drawMap() {
  const c = $("map"), ctx = c.getContext("2d"), m = S.info.map, k = mapScale();
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, k.w, k.h);
  m.points.forEach((p, i) => {
    ctx.fillStyle = COLOURS[m.classes[i] % COLOURS.length];
    ctx.fillRect(k.w / 2 + p[0] * k.sx - 1, k.h / 2 - p[1] * k.sy - 1, 2, 2);
  });
  if (S.point) {
    ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.beginPath();
    ctx.arc(k.w / 2 + S.point[0] * k.sx, k.h / 2 - S.point[1] * k.sy, 6, 0, 2 * Math.PI); ctx.stroke();
  }
}
async function onMapClick(ev) {
  const c = $("map"), r = c.getBoundingClientRect(), k = mapScale();
  const px = (ev.clientX - r.left) * c.width / r.width, py = (ev.clientY - r.top) * c.height / r.height;
  const point = [(px - k.w / 2) / k.sx, (k.h / 2 - py) / k.sy];
  try {
    const res = await api("/api/map", { point, y: S.y });
    S.point = point; setCode(res.code);
    drawMap(); clearError();
  } catch (e) { /* shown */ }
}

// ---------------------------------------------------------------- starting codes
async function start(kind) {
  try {
    const r = await api("/api/start", { kind, seed: Math.floor(Math.random() * 2 ** 31) });
    $("start-note").textContent = r.note ? `GMM: ${r.note}` : ""; setCode(r.code); clearError();
  } catch (e) { /* shown */ }
}
async function fromVal(i) {
  try {
    const r = await api(`/api/val/${i}`);
    if (S.info.conditional) { S.y = r.label; $("class").value = String(r.label); }
    setCode(r.code); clearError();
    return r;
  } catch (e) { return null; }
}

// ---------------------------------------------------------------- interpolation
// An upload's anomaly score (score.py's default), its place among the validation images, and its heat map:
// red where it costs more bits than typical images do at that place.
function showOddity(end, a) {
  const heat = $(`${end}-heat`), note = $(`${end}-odd`);
  if (!a) { heat.hidden = true; note.textContent = ""; return; }
  heat.src = a.heat; heat.hidden = false;
  heat.title = `bits above the typical image's, +-${a.heat_scale_bits.toFixed(1)} at full colour`;
  const value = a.value === null ? "not finite" : a.value.toPrecision(4);
  note.textContent = `upload: ${a.score} ${value}, above ${a.percentile.toFixed(1)}% of ` +
    `${a.validation_images.toLocaleString("en")} validation images: ` +
    (a.flagged ? `odd (flagged at ${a.fpr * 100}% false positives)` : "typical") + "; beside it, its heat map";
}
async function endFromVal(end) {
  const i = Number($(`${end}-index`).value);
  try {
    const r = await api(`/api/val/${i}`);
    S.ends[end] = { code: r.code, image: r.image, what: `validation ${i} (${label(r.label)})` };
    $(`${end}-img`).src = r.image; clearError(); showOddity(end, null);
  } catch (e) { /* shown */ }
}
async function endFromFile(end, file) {
  if (!file) return;
  const q = S.info.conditional ? `?y=${S.y}` : "";
  try {
    const r = await api(`/api/upload${q}`, file, true);
    S.ends[end] = { code: r.code, image: r.image, what: `${file.name} (${r.size[0]}x${r.size[1]} ${r.format})` };
    $(`${end}-img`).src = r.image; clearError();
    showOddity(end, r.anomaly);
  } catch (e) { $(`${end}-file`).value = ""; }
}
async function interpolate() {
  const a = S.ends.a, b = S.ends.b;
  if (!a || !b) { showError("choose both ends first (a validation image or an upload)"); return; }
  try {
    const r = await api("/api/interpolate", { a: a.code, b: b.code, steps: Number($("interp-steps").value), y: S.y });
    const fig = (src, cap) => el("figure", {}, el("img", { className: "px", src }), el("figcaption", { textContent: cap }));
    const n = r.images.length;
    $("interp").replaceChildren(fig(a.image, "A"), ...r.images.map((src, i) =>
      fig(src, i === 0 ? "A recon" : i === n - 1 ? "B recon" : `${(i / (n - 1)).toFixed(2)}`)), fig(b.image, "B"));
    $("interp-timing").textContent = `${n} images decoded in ${r.ms.toFixed(1)} ms; A: ${a.what}, B: ${b.what}`;
    clearError();
  } catch (e) { /* shown */ }
}

// ---------------------------------------------------------------- the run
function showRun() {
  const i = S.info;
  $("config").replaceChildren(...Object.entries(i.config).map(([k, v]) =>
    el("tr", {}, el("td", { textContent: k }), el("td", { textContent: JSON.stringify(v) }))));
  const e = i.evaluation;
  if (!e) { $("eval").replaceChildren(el("span", { className: "muted", textContent: "no evaluation file beside the checkpoint (train.py --evaluate --resume CHECKPOINT writes one)" })); return; }
  const keys = ["n", "bce", "mse", "mse_from_code", "kl", "bce_kl", "ssim", "ssim_from_code", "iwae_nll", "bits_per_dim",
    "fid_prior", "fid_gmm", "fid_recon"];
  const splits = Object.keys(e.splits), shown = keys.filter((k) => splits.some((s) => e.splits[s][k] !== undefined));
  // a decoder that reads pixels: its JSON says which figure is one step ahead and which is of the pictures
  const label = (k) => splits.map((s) => (e.splits[s].labels || {})[k]).find((v) => typeof v === "string") || k;
  const fmt = (v) => v === undefined ? "" : (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(4) : v);
  $("eval").replaceChildren(el("div", { className: "muted", textContent: e.path }), el("table", {},
    el("tr", {}, el("th", { textContent: "split" }), ...shown.map((k) => el("th", { textContent: label(k) }))),
    ...splits.map((s) => el("tr", {}, el("td", { textContent: s }),
      ...shown.map((k) => el("td", { textContent: String(fmt(e.splits[s][k])) }))))));
}

async function init() {
  try { S.info = await api("/api/info"); } catch (e) { $("model").textContent = "the model could not be loaded"; return; }
  const i = S.info;
  S.lastMs = i.decode_ms;
  $("model").textContent = `${i.family}; latent size ${i.latent_size}; images ${i.image_shape.join("x")}; ${i.checkpoint}`;
  if (i.conditional) {
    $("classrow").style.display = "block";
    $("class").replaceChildren(...i.class_names.map((n, c) => el("option", { value: String(c), textContent: `${c}: ${n}` })));
    S.y = 0;
    $("class").addEventListener("change", () => { S.y = Number($("class").value); S.sweep = null; requestDecode(); });
  }
  $("levels-note").textContent = i.levels_note;
  $("map-note").textContent = `${i.map.points.length} of ${i.val_images} validation codes; ` +
    (i.map.plane === "z" ? "the plane is z itself" : "the plane of the means' first two principal axes") +
    ` (x: ${i.map.labels[0]}, y: ${i.map.labels[1]}); click to decode a point`;
  const names = i.class_names || [];
  $("legend").replaceChildren(...names.slice(0, 10).flatMap((n, c) =>
    [el("span", { style: { color: COLOURS[c] }, textContent: "\u25a0" }), ` ${n} `]));
  $("val-index").max = $("a-index").max = $("b-index").max = i.val_images - 1;
  $("thumbs").replaceChildren(...i.thumbnails.map((t) =>
    el("img", { className: "px", src: t.image, title: `validation ${t.index}: ${label(t.label)}`, data: { index: t.index } })));
  $("thumbs").addEventListener("click", (ev) => { const d = ev.target.dataset; if (d && d.index !== undefined) fromVal(Number(d.index)); });
  buildSliders(); showRun();
  $("reset-mean").onclick = () => start("mean"); $("reset-prior").onclick = () => start("prior");
  $("reset-gmm").onclick = () => start("gmm"); $("reset-val").onclick = () => fromVal(Number($("val-index").value));
  $("map").addEventListener("click", onMapClick);
  for (const end of ["a", "b"]) {
    $(`${end}-val`).onclick = () => endFromVal(end);
    $(`${end}-file`).addEventListener("change", (ev) => endFromFile(end, ev.target.files[0]));
  }
  $("interp-run").onclick = interpolate;
  await fromVal(0);
  await Promise.all([endFromVal("a"), endFromVal("b")]);
  drawMap();
  document.body.dataset.ready = "1";
}
init();
