// MegaContext explorer: plain JavaScript, shipped in the package (no CDN, no build step).
// Everything drawn comes from the server's data routes (mcruntime/serve/routes_explorer.py);
// stored text is untrusted, so it only ever enters the page as textContent.
"use strict";

const $ = (sel) => document.querySelector(sel);
const KEY = "mc-explorer-key";
const S = {
  name: null, version: null, head: null, view: null,  // the memory, the version shown (null: newest)
  start: 0, stop: 0,  // the stretch of tokens the strips show
  textNext: null, textStop: null, segment: null,
  picture: null,  // the focus of the last answer (or replay)
  passages: [],  // search hits shown on the timeline
};

// ---------------------------------------------------------------- small helpers
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const kid of kids) if (kid != null) e.append(kid);  // strings become text nodes
  return e;
}
const fmt = (n) => Number(n).toLocaleString("en-US");
const when = (ns) => (ns ? new Date(Number(ns) / 1e6).toISOString().replace("T", " ").slice(0, 19) : "");
function status(msg, isError) {
  const s = $("#status");
  s.textContent = msg || "";
  s.className = isError ? "error" : "";
}

class NeedKey extends Error {}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    opts = Object.assign({}, opts, { body: JSON.stringify(opts.json), method: opts.method || "POST" });
  }
  const r = await fetch(path, Object.assign({}, opts, { headers }));
  if (r.status === 401) {
    $("#keyform").hidden = false;
    status("this server needs its API key", true);
    throw new NeedKey("API key needed");
  }
  if (opts.stream) return r;
  const body = await r.json();
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
  return body;
}

function q(params) {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) out.set(k, v);
  const s = out.toString();
  return s ? "?" + s : "";
}
const mem = (path, params) => `/v1/memories/${encodeURIComponent(S.name)}/${path}${q(params || {})}`;

// ---------------------------------------------------------------- routing
function route() {
  const h = decodeURIComponent(location.hash.slice(1) || "/");
  const m = h.match(/^\/m\/([^@]+)(?:@(\d+))?$/);
  status("");
  if (m) return openMemory(m[1], m[2] ? Number(m[2]) : null).catch(fail);
  return showMemories().catch(fail);
}
function fail(e) {
  if (!(e instanceof NeedKey)) status(e.message || String(e), true);
}
function ready() {
  if (!document.body.dataset.ready) {
    window.mcReadyAt = performance.now();
    document.body.dataset.ready = "1";
  }
}

// ---------------------------------------------------------------- memories view
async function showMemories() {
  $("#memory-view").hidden = true;
  $("#memories-view").hidden = false;
  $("#crumb").textContent = "";
  const body = await api("/v1/explorer/memories");
  const tb = $("#memories tbody");
  tb.replaceChildren();
  for (const m of body.data) {
    tb.append(el("tr", { "data-memory": m.id },
      el("td", {}, el("a", { href: "#/m/" + encodeURIComponent(m.id), text: m.id })),
      el("td", { class: "num", text: fmt(m.length) }),
      el("td", { class: "num", text: m.levels }),
      el("td", { class: "num", text: fmt(m.segments) }),
      el("td", { class: "num", text: m.version }),
      el("td", { text: m.last ? `${when(m.last.time_ns)} ${m.last.message || ""}` : "" })));
  }
  $("#no-memories").hidden = body.data.length > 0;
  ready();
}

// ---------------------------------------------------------------- one memory
async function openMemory(name, version) {
  const fresh = S.name !== name;
  S.name = name;
  S.version = version;
  $("#memories-view").hidden = true;
  $("#memory-view").hidden = false;
  $("#crumb").textContent = "/ " + name;
  const v = await api(mem("view", { version }));
  if (fresh || S.stop > v.length || S.stop === 0) { S.start = 0; S.stop = v.length; }
  setView(v);
  buildStrips(v);
  await Promise.all([drawView(), loadCommits()]);
  ready();
}

function setView(v) {
  S.view = v;
  S.head = v.head;
  $("#version").textContent = v.version;
  $("#head").textContent = v.head;
  $("#back").disabled = v.version <= 1;
  $("#forward").disabled = v.version >= v.head;
  $("#summary").textContent =
    `${fmt(v.length)} tokens · ${v.levels.length} levels · ${fmt(v.segments)} segments`;
  const tj = $("#tagjump");
  tj.replaceChildren(el("option", { value: "", text: "jump to a tag…" }));
  for (const [t, tv] of Object.entries(v.tags)) tj.append(el("option", { value: tv, text: `${t} (v${tv})` }));
}

function go(version) {
  location.hash = "#/m/" + encodeURIComponent(S.name) + (version && version !== S.head ? "@" + version : "");
}

// ---------------------------------------------------------------- the timeline
function buildStrips(v) {
  const box = $("#strips");
  box.replaceChildren();
  const rows = [{ level: "focus", label: "focus" }];
  for (let i = v.levels.length - 1; i >= 0; i--) {
    const l = v.levels[i];
    rows.push({ level: l.level, label: l.level === 0 ? "raw" : `level ${l.level}` });
  }
  for (const r of rows) {
    const c = el("canvas", { "data-level": r.level, height: 20 });
    box.append(el("div", { class: "strip", "data-level": r.level }, el("span", { class: "label", text: r.label }), c));
    if (r.level !== "focus") attachDrill(c, r.level);
  }
  box.append(el("div", { id: "overlay" }));
}

function stripWidth() {
  const c = document.querySelector('#strips canvas[data-level="0"]');
  return Math.max(100, Math.floor(c ? c.clientWidth : 800));
}

async function drawView() {
  $("#range").textContent = `tokens ${fmt(S.start)}–${fmt(S.stop)} of ${fmt(S.view.length)}`;
  const width = stripWidth();
  const [st, segs] = await Promise.all([
    api(mem("strips", { version: S.version, start: S.start, stop: S.stop, width })),
    api(mem("segments", { version: S.version, start: S.start, stop: S.stop, limit: 500 })),
  ]);
  drawStrips(st);
  drawFocusRow();
  drawOverlay();
  listSegments(segs);
}

const ROLE_COLORS = ["#7a9cc6", "#e0a458", "#8fbf7f"];

function drawStrips(st) {
  for (const row of st.levels) {
    const c = document.querySelector(`#strips canvas[data-level="${row.level}"]`);
    if (!c) continue;
    c.width = st.width;
    const g = c.getContext("2d");
    g.clearRect(0, 0, c.width, c.height);
    const norms = (row.norm || []).filter((x) => x !== null);
    const lo = Math.min(...norms), hi = Math.max(...norms);
    for (let x = 0; x < st.width; x++) {
      if (!row.count[x]) continue;
      if (row.level === 0) {
        g.fillStyle = ROLE_COLORS[st.roles[x]] || "#ccc";
      } else if (row.norm && row.norm[x] !== null) {
        const t = hi > lo ? (row.norm[x] - lo) / (hi - lo) : 0.5;  // gist norm, shaded
        g.fillStyle = `hsl(215, 35%, ${78 - 40 * t}%)`;
      } else {
        g.fillStyle = "#9aa7b4";  // nodes there; too many to read norms at this zoom
      }
      g.fillRect(x, 0, 1, c.height);
    }
  }
}

// the picture's runs: at what level each stretch of the timeline was read
function drawFocusRow() {
  const c = document.querySelector('#strips canvas[data-level="focus"]');
  if (!c) return;
  c.width = stripWidth();
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const p = S.picture;
  if (!p) return;
  const maxLevel = Math.max(1, ...p.runs.map((r) => r.level));
  for (const r of p.runs) {
    const [x0, x1] = [px(r.start, c.width), px(r.stop, c.width)];
    if (x1 < 0 || x0 > c.width) continue;
    g.fillStyle = r.level === 0 ? "#d9480f" : `hsl(30, 40%, ${55 + 35 * (r.level / maxLevel)}%)`;
    g.fillRect(x0, 0, Math.max(1, x1 - x0), c.height);
  }
}

function px(pos, width) {
  return ((pos - S.start) / Math.max(1, S.stop - S.start)) * width;
}

// spans of the focus and recalled or found passages, over the strips
function drawOverlay() {
  const o = $("#overlay");
  if (!o) return;
  o.replaceChildren();
  const w = o.clientWidth || stripWidth();
  const add = (start, stop, kind, extra) => {
    if (stop <= S.start || start >= S.stop) return;
    const x0 = Math.max(0, px(start, w)), x1 = Math.min(w, px(stop, w));
    o.append(el("div", Object.assign({ class: "mark " + kind, "data-start": start, "data-stop": stop,
      style: `left:${x0}px;width:${Math.max(2, x1 - x0)}px` }, extra || {})));
  };
  if (S.picture) {
    for (const s of S.picture.spans) add(s.start, s.stop, s.kind);
    for (const r of S.picture.recall) add(r.start, r.stop, "recall");
  }
  for (const h of S.passages) add(h.start, h.stop, "recall", { "data-hit": "1" });
}

function zoomTo(start, stop) {
  S.start = Math.max(0, Math.floor(start));
  S.stop = Math.min(S.view.length, Math.ceil(stop));
  if (S.stop <= S.start) S.stop = Math.min(S.view.length, S.start + 1);
  return drawView().catch(fail);
}

function attachDrill(canvas, level) {
  let down = null;
  const posAt = (ev) => {
    const r = canvas.getBoundingClientRect();
    const f = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
    return S.start + f * (S.stop - S.start);
  };
  canvas.addEventListener("mousedown", (ev) => { down = posAt(ev); });
  canvas.addEventListener("mouseup", (ev) => {
    const up = posAt(ev);
    const a = down;
    down = null;
    if (a !== null && Math.abs(up - a) > (S.stop - S.start) / 100) {  // a drag: zoom to it
      zoomTo(Math.min(a, up), Math.max(a, up));
      return;
    }
    drill(level, up);
  });
}

// a click on level L at token pos: that node's span becomes the view, its raw text is shown
function drill(level, pos) {
  const span = Math.pow(S.view.block, level);
  const nodes = S.view.levels[level].nodes;
  const i = Math.floor(pos / span);
  if (level > 0 && i >= nodes) {
    status(`no level-${level} gist there yet (the newest tokens are raw)`);
    return;
  }
  const start = level === 0 ? Math.floor(pos / S.view.block) * S.view.block : i * span;
  const stop = Math.min(S.view.length, level === 0 ? start + S.view.block * 64 : start + span);
  $("#drill").textContent = level === 0
    ? `raw tokens from ${fmt(start)}`
    : `level ${level} gist ${fmt(i)}: tokens ${fmt(start)}–${fmt(stop)}`;
  $("#drill").dataset.level = level;
  S.segment = null;
  $("#segment-detail").hidden = true;
  showTab("tree");
  if (level > 0) zoomTo(start, stop);
  return showText(start, stop, `Raw text of tokens ${fmt(start)}–${fmt(stop)}`);
}

async function showText(start, stop, title, append) {
  const page = await api(mem("text", { version: S.version, start, stop }));
  $("#text-title").textContent = title || $("#text-title").textContent;
  const pre = $("#text");
  if (append) pre.append(document.createTextNode(page.text));
  else pre.textContent = page.text;
  pre.dataset.start = append ? pre.dataset.start : page.start;
  pre.dataset.stop = page.stop;
  S.textNext = page.next;
  S.textStop = stop;
  $("#more").hidden = page.next === null;
}

function listSegments(body) {
  const ol = $("#segments");
  ol.replaceChildren();
  $("#seg-count").textContent = `(${fmt(body.data.length)}${body.more ? ` of ${fmt(body.data.length + body.more)}` : ""})`;
  for (const s of body.data) {
    const li = el("li", { "data-id": s.id, "data-start": s.start, "data-stop": s.stop,
      class: S.segment === s.id ? "on" : "" },
      el("span", { class: "sw role-" + s.role }),
      el("span", { class: "src", text: s.source }),
      el("div", { class: "meta", text: `#${s.id} · ${s.role} · tokens ${fmt(s.start)}–${fmt(s.stop)} · ${when(s.time_ns)}${s.notes ? ` · ${s.notes} note(s)` : ""}` }));
    for (const t of s.tags) li.append(el("span", { class: "tagchip", text: t }));
    li.addEventListener("click", () => selectSegment(s).catch(fail));
    ol.append(li);
  }
}

async function selectSegment(s) {
  S.segment = s.id;
  for (const li of document.querySelectorAll("#segments li")) li.classList.toggle("on", Number(li.dataset.id) === s.id);
  $("#drill").textContent = `segment #${s.id}: ${s.source}`;
  $("#segment-detail").hidden = false;
  $("#note-seg").textContent = `#${s.id} ${s.source}`;
  await Promise.all([showText(s.start, s.stop, `Raw text of segment #${s.id}`), loadNotes()]);
}

async function loadNotes() {
  const body = await api(mem("notes", { version: S.version }));
  const ul = $("#notes");
  ul.replaceChildren();
  for (const n of body.data[String(S.segment)] || []) {
    ul.append(el("li", {}, el("span", { text: n.text }), el("span", { class: "meta", text: " " + when(n.time_ns) })));
  }
}

// ---------------------------------------------------------------- search and ask
function passage(text, ranges) {
  const p = el("div", { class: "passage" });
  let at = 0;
  for (const [a, b] of ranges) {
    if (a > at) p.append(text.slice(at, a));
    p.append(el("mark", { text: text.slice(a, b) }));
    at = b;
  }
  p.append(text.slice(at));
  return p;
}

async function search(query) {
  const body = await api(mem("search", { q: query, k: 8 }));
  const ol = $("#hits");
  ol.replaceChildren();
  S.passages = body.data;
  for (const h of body.data) {
    const li = el("li", { "data-start": h.start, "data-stop": h.stop },
      el("div", { class: "meta", text: `score ${h.score.toFixed(3)} · ${h.via} · tokens ${fmt(h.start)}–${fmt(h.stop)}` }),
      el("span", { class: "src", text: h.source || "" }),
      passage(h.text, h.highlights));
    li.addEventListener("click", () => {
      const pad = (h.stop - h.start) * 4;
      zoomTo(h.start - pad, h.stop + pad);
    });
    ol.append(li);
  }
  if (!body.data.length) ol.append(el("li", { text: "nothing found" }));
  drawOverlay();
}

async function ask(question) {
  const out = $("#answer");
  out.textContent = "";
  delete out.dataset.done;
  $("#focus").hidden = true;
  const r = await api(mem("ask"), { json: { question, max_tokens: 48 }, stream: true });
  if (!r.ok) {
    const body = await r.json();
    throw new Error((body.error && body.error.message) || r.statusText);
  }
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line) continue;
      const msg = JSON.parse(line);
      if (msg.delta) out.append(msg.delta);
      else if (msg.done) { showPicture(msg.done.picture); out.dataset.done = "1"; out.dataset.version = msg.done.memory.version; }
      else if (msg.error) throw new Error(msg.error.message);
    }
  }
  status("answered; the turn is remembered");
  await newest();
}

// after a write: show the newest version (it is the one written to)
async function newest() {
  if (S.version !== null) { go(null); return; }
  const v = await api(mem("view"));
  if (S.stop === S.view.length) S.stop = v.length;  // the whole history stays in view
  setView(v);
  await Promise.all([drawView(), loadCommits()]);
}

function showPicture(p) {
  S.picture = p;
  $("#focus").hidden = false;
  const lv = Object.entries(p.levels).map(([l, n]) => (l === "0" ? `${n} raw tokens` : `${n} gists at level ${l}`)).join(", ");
  $("#focus-cost").textContent = `(${p.cost}${p.budget ? " of " + p.budget : ""} positions: ${lv})`;
  const spans = $("#focus-spans");
  spans.replaceChildren();
  for (const s of p.spans) {
    spans.append(el("li", { "data-start": s.start, "data-stop": s.stop, "data-kind": s.kind },
      el("span", { class: "kind-" + s.kind, text: s.kind === "tail" ? "recent tail" : "detail" }),
      ` tokens ${fmt(s.start)}–${fmt(s.stop)} `, el("span", { class: "src", text: s.source || "" })));
  }
  const rec = $("#focus-recall");
  rec.replaceChildren();
  for (const r of p.recall) {
    rec.append(el("li", { "data-start": r.start, "data-stop": r.stop },
      `score ${r.score.toFixed(3)} · tokens ${fmt(r.start)}–${fmt(r.stop)} `, el("span", { class: "src", text: r.source || "" })));
  }
  if (!p.recall.length) rec.append(el("li", { text: "none" }));
  drawFocusRow();
  drawOverlay();
}

// ---------------------------------------------------------------- history
async function loadCommits() {
  const body = await api(mem("commits", { version: S.version, limit: 50 }));
  const ol = $("#commits");
  ol.replaceChildren();
  for (const c of body.data) {
    const added = c.appended && c.appended[1] > c.appended[0] ? `+${fmt(c.appended[1] - c.appended[0])} tokens, ${c.segments.length} segment(s)` : "no tokens";
    const li = el("li", { "data-version": c.version, class: c.version === S.view.version ? "on" : "" },
      el("b", { text: `v${c.version}` }), " ", el("span", { text: c.message || "" }),
      el("div", { class: "meta", text: `${when(c.time_ns)} · ${added} · ${fmt(c.length)} tokens in all` }));
    li.append(el("button", { type: "button", text: "view", onclick: (ev) => { ev.stopPropagation(); go(c.version); } }));
    if (c.segments.length) {
      li.append(el("button", { type: "button", text: "what was appended", onclick: (ev) => {
        ev.stopPropagation(); go(c.version); showTab("tree");
        showText(c.appended[0], c.appended[1], `Appended by v${c.version}`).catch(fail);
      } }));
    }
    if (c.chat) {
      li.append(el("button", { type: "button", text: "focus it read", onclick: (ev) => { ev.stopPropagation(); replay(c.version).catch(fail); } }));
    }
    ol.append(li);
  }
  const tags = $("#tags");
  tags.replaceChildren();
  for (const [t, v] of Object.entries(body.tags)) {
    tags.append(el("li", { "data-tag": t }, el("a", { href: `#/m/${encodeURIComponent(S.name)}@${v}`, text: t }), ` → v${v}`));
  }
  if (!Object.keys(body.tags).length) tags.append(el("li", { class: "meta", text: "no tags" }));
}

async function replay(version) {
  status("replaying the turn's question…");
  const body = await api(mem("replay", { version }));
  const box = $("#replay");
  box.replaceChildren(el("p", {}, `v${version} asked: `, el("q", { text: body.question })));
  showPicture(body.picture);
  box.append(el("p", { class: "meta", text: `${body.picture.spans.length} spans read, ${body.picture.recall.length} recalled; drawn on the timeline` }));
  status("");
}

async function compare(a, b) {
  const body = await api(mem("compare", { a, b }));
  const box = $("#compare");
  const list = (rows) => {
    const ol = el("ol");
    for (const s of rows) ol.append(el("li", {}, el("span", { class: "src", text: s.source }), ` #${s.id} · ${fmt(s.stop - s.start)} tokens`));
    return ol;
  };
  box.replaceChildren(
    el("p", { text: `v${body.a.version}: ${fmt(body.a.length)} tokens, ${body.a.segments} segments · v${body.b.version}: ${fmt(body.b.length)} tokens, ${body.b.segments} segments · ${body.common} in common` }),
    el("h4", { text: `only in v${body.a.version}` }), list(body.only_a),
    el("h4", { text: `only in v${body.b.version}` }), list(body.only_b));
  if (body.objects_changed.length) box.append(el("p", { class: "meta", text: "objects changed: " + body.objects_changed.join(", ") }));
}

// ---------------------------------------------------------------- wiring
function showTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("on", b.dataset.tab === name);
  for (const t of ["tree", "ask", "history"]) $("#tab-" + t).hidden = t !== name;
}

function wire() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#keyform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("#key").value.trim());
    $("#keyform").hidden = true;
    route();
  });
  $("#back").addEventListener("click", () => go(Math.max(1, S.view.version - 1)));
  $("#forward").addEventListener("click", () => go(Math.min(S.head, S.view.version + 1)));
  $("#newest").addEventListener("click", () => go(null));
  $("#tagjump").addEventListener("change", (ev) => { if (ev.target.value) go(Number(ev.target.value)); });
  $("#zoomout").addEventListener("click", () => {
    const mid = (S.start + S.stop) / 2, half = Math.max(S.stop - S.start, 32) * 2;
    zoomTo(mid - half, mid + half);
  });
  $("#whole").addEventListener("click", () => zoomTo(0, S.view.length));
  $("#more").addEventListener("click", () => {
    if (S.textNext !== null) showText(S.textNext, S.textStop, null, true).catch(fail);
  });
  $("#searchform").addEventListener("submit", (ev) => { ev.preventDefault(); search($("#q").value).catch(fail); });
  $("#askform").addEventListener("submit", (ev) => { ev.preventDefault(); ask($("#question").value).catch(fail); });
  $("#tagform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    api(mem("tags"), { json: { tag: $("#tag-name").value.trim(), version: S.view.version } })
      .then(() => { status("tagged v" + S.view.version); return loadCommits(); }).catch(fail);
  });
  $("#noteform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (S.segment === null) return;
    api(mem("notes"), { json: { segment: S.segment, text: $("#note-text").value } })
      .then((r) => { status(`note stored as v${r.version}`); $("#note-text").value = ""; return Promise.all([newest(), loadNotes()]); })
      .catch(fail);
  });
  $("#compareform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    compare(Number($("#cmp-a").value), Number($("#cmp-b").value)).catch(fail);
  });
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => { if (S.view && !$("#memory-view").hidden) drawView().catch(fail); });
}

wire();
route();
