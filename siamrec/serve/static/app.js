"use strict";
// siamrec serve: the page's logic (plain JS, no build step). Songs are addressed by id (their row).
const $ = (sel) => document.querySelector(sel);
const state = { info: null, songs: [], seeds: [], upload: null, result: null, selected: new Set(), playing: null };
const SHOWN = 500;  // library rows drawn at once (search narrows the rest)

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// plotly renders a few HTML tags in hover text: show names as text
function esc(text) { return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }

function message(text) { $("#message").textContent = text || ""; }

async function api(url, options) {
  const response = await fetch(url, options);
  if (!response.ok) {
    let detail = response.statusText;
    try { const body = await response.json(); detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  return response;
}

// ------------------------------------------------------------------ playing
function play(id) {
  const song = state.songs[id];
  const player = $("#player");
  if (song.playable === "no") { message(`${song.name}: its audio is not available`); return; }
  player.src = `/api/audio/${id}`;
  state.playing = id;
  $("#now-playing").textContent = song.name + (song.playable === "wav" ? " (converted to WAV)" : "");
  document.querySelectorAll("tr.playing").forEach((r) => r.classList.remove("playing"));
  document.querySelectorAll(`tr[data-id="${id}"]`).forEach((r) => r.classList.add("playing"));
  player.play().catch((e) => { if (e.name !== "AbortError") message(`cannot play ${song.name}: ${e.message}`); });
}

function songCells(song) {
  const name = el("span", { class: "play", title: `play ${song.key}`, onclick: () => play(song.id) }, song.name);
  const marks = song.playable === "wav" ? el("span", { class: "mark", title: "played as WAV (transcoded)" }, " wav")
    : song.playable === "no" ? el("span", { class: "mark" }, " (no audio)") : "";
  return [name, marks];
}

// ------------------------------------------------------------------ library
function renderLibrary() {
  const q = $("#search").value.trim().toLowerCase();
  const hits = state.songs.filter((s) => !q || s.name.toLowerCase().includes(q) || s.key.toLowerCase().includes(q)
    || s.labels.some((l) => l.toLowerCase().includes(q)));
  const body = $("#library-list");
  body.replaceChildren(...hits.slice(0, SHOWN).map((s) => {
    const box = el("input", { type: "checkbox", title: "add to “more like these”", class: "pick" });
    box.checked = state.selected.has(s.id);
    box.addEventListener("change", () => { box.checked ? state.selected.add(s.id) : state.selected.delete(s.id); updateMore(); });
    const row = el("tr", { "data-id": s.id, "data-key": s.key, class: s.id === state.playing ? "playing" : "" },
      el("td", {}, box),
      el("td", {}, el("button", { class: "seed-btn", title: "make it the seed", onclick: () => setSeeds([s.id]) }, "★")),
      el("td", {}, ...songCells(s), " ", el("span", { class: "labels" }, s.labels.join(", ")),
        state.info.has_groups ? el("span", { class: "group" }, ` · ${s.group}`) : ""));
    return row;
  }));
  $("#library-count").textContent = `${hits.length} of ${state.songs.length} songs`;
  $("#library-more").textContent = hits.length > SHOWN ? `showing ${SHOWN} of ${hits.length}: refine the search` : "";
}

function updateMore() {
  const b = $("#more-like");
  b.textContent = `more like these (${state.selected.size})`;
  b.disabled = state.selected.size === 0;
}

// ------------------------------------------------------------------ playlist
function k() { return Math.max(1, Math.min(state.info.max_k, parseInt($("#k").value, 10) || state.info.k)); }

async function setSeeds(ids) { state.seeds = ids; state.upload = null; await refresh(); }

async function refresh() {
  message("");
  if (state.upload) { return uploadSong(); }
  if (!state.seeds.length) return;
  const params = new URLSearchParams();
  state.seeds.forEach((id) => params.append("seed", id));
  params.set("k", k());
  params.set("exclude_group", $("#exclude-group").checked);
  try {
    const result = await (await api(`/api/recommend?${params}`)).json();
    showPlaylist(result);
  } catch (e) { message(e.message); }
}

function showPlaylist(result) {
  state.result = result;
  const names = result.seeds.map((s) => s.name).join(" + ");
  const labels = result.seeds.length === 1 && result.seeds[0].labels.length ? ` [${result.seeds[0].labels.join(", ")}]` : "";
  const isNew = result.seeds.length === 1 && result.seeds[0].id === null;
  $("#seed").textContent = `${isNew ? "new song" : result.seeds.length > 1 ? "seeds" : "seed"}: ${names}${labels}`;
  $("#seed").dataset.ids = isNew ? "" : result.seeds.map((s) => s.id).join(",");
  $("#playlist tbody").replaceChildren(...result.playlist.map((s) => el("tr", { "data-id": s.id, "data-key": s.key },
    el("td", {}, s.rank),
    el("td", {}, el("button", { class: "play-btn", title: "play", onclick: () => play(s.id) }, "▶")),
    el("td", {}, ...songCells(s), state.info.has_groups ? el("span", { class: "group" }, ` · ${s.group}`) : ""),
    el("td", { class: "labels" }, s.labels.join(", ")),
    el("td", {}, s.similarity.toFixed(3)),
    el("td", {}, el("button", { class: "seed-btn", title: "make it the seed", onclick: () => setSeeds([s.id]) }, "★")))));
  for (const f of ["m3u8", "csv", "json"]) $(`#export-${f}`).disabled = !result.playlist.length;
  highlightSeeds();
}

async function exportAs(format) {
  const r = state.result;
  if (!r) return;
  const seedName = r.seeds.map((s) => s.name).join(" + ");
  const body = { format, seed_name: seedName, seed_labels: r.seeds.length === 1 ? r.seeds[0].labels : [],
    items: r.playlist.map((s) => ({ id: String(s.id), similarity: s.similarity })) };
  try {
    const response = await api("/api/export", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const url = URL.createObjectURL(await response.blob());
    const a = el("a", { href: url, download: `${seedName.replace(/[\\/:*?"<>|]+/g, "_").slice(0, 60) || "playlist"}.${format}` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) { message(e.message); }
}

// ------------------------------------------------------------------ new song
async function uploadSong() {
  const file = state.upload;
  const form = new FormData();
  form.append("file", file);
  form.append("k", k());
  $("#upload-status").textContent = `embedding ${file.name}…`;
  $("#upload-btn").disabled = true;
  try {
    const result = await (await api("/api/recommend", { method: "POST", body: form })).json();
    $("#upload-status").textContent = "";
    showPlaylist(result);
  } catch (e) {
    $("#upload-status").textContent = "";
    message(e.message);
  } finally { $("#upload-btn").disabled = false; }
}

// ------------------------------------------------------------------ map
let mapTraces = null;

async function loadMap() {
  if (!state.info.map || typeof Plotly === "undefined") { $("#map-status").textContent = "(needs plotly: pip install plotly)"; return; }
  let body;
  for (;;) {
    const response = await fetch("/api/map");
    if (response.status === 202) { $("#map-status").textContent = "computing…"; await new Promise((r) => setTimeout(r, 1000)); continue; }
    if (!response.ok) { $("#map-status").textContent = "failed"; message((await response.json()).detail); return; }
    body = await response.json();
    break;
  }
  $("#map-status").textContent = `(${body.method}, coloured by label)`;
  const byLabel = new Map();
  state.songs.forEach((s, i) => {
    const label = s.labels[0] || "(no label)";
    if (!byLabel.has(label)) byLabel.set(label, []);
    byLabel.get(label).push(i);
  });
  const big = state.songs.length > 5000;
  mapTraces = [...byLabel.entries()].map(([label, ids]) => ({
    type: big ? "scattergl" : "scatter", mode: "markers", name: label,
    x: ids.map((i) => body.x[i]), y: ids.map((i) => body.y[i]), customdata: ids,
    text: ids.map((i) => `${esc(state.songs[i].name)}<br>${esc(state.songs[i].labels.join(", "))}`),
    hovertemplate: "%{text}<extra></extra>", marker: { size: big ? 4 : 9, line: { width: 0 } },
  }));
  mapTraces.push({ type: "scatter", mode: "markers", name: "seed", x: [], y: [], hoverinfo: "skip", showlegend: false,
    marker: { size: 18, symbol: "star", color: "rgba(0,0,0,0)", line: { width: 2, color: "#000" } } });
  const layout = { margin: { l: 10, r: 10, t: 10, b: 10 }, xaxis: { visible: false }, yaxis: { visible: false },
    legend: { orientation: "h" }, hovermode: "closest", dragmode: "pan" };
  await Plotly.newPlot("map", mapTraces, layout, { displaylogo: false, responsive: true, scrollZoom: true });
  $("#map").on("plotly_click", (ev) => {
    const p = ev.points.find((q) => q.customdata !== undefined);
    if (p) setSeeds([p.customdata]);
  });
  highlightSeeds();
}

function highlightSeeds() {
  const map = $("#map");
  if (!mapTraces || !map.data || !state.result) return;
  const ids = state.result.seeds.map((s) => s.id).filter((id) => id !== null && id !== undefined);
  const xs = [], ys = [];
  for (const id of ids) for (const t of map.data) { const j = (t.customdata || []).indexOf(id); if (j >= 0) { xs.push(t.x[j]); ys.push(t.y[j]); } }
  Plotly.restyle("map", { x: [xs], y: [ys] }, [map.data.length - 1]);
}

// ------------------------------------------------------------------ start
async function main() {
  state.info = await (await api("/api/info")).json();
  state.songs = await (await api("/api/songs")).json();
  $("#info").textContent = `${state.info.songs} songs · ${state.info.search} search · ${state.info.run}`;
  $("#k").value = state.info.k;
  $("#k").max = state.info.max_k;
  $("#group-option").hidden = !state.info.has_groups;
  if (!state.info.can_embed) { $("#upload-form").hidden = true; $("#upload-title").hidden = true; }
  renderLibrary();
  $("#search").addEventListener("input", renderLibrary);
  $("#k").addEventListener("change", refresh);
  $("#exclude-group").addEventListener("change", refresh);
  $("#more-like").addEventListener("click", () => setSeeds([...state.selected]));
  for (const f of ["m3u8", "csv", "json"]) $(`#export-${f}`).addEventListener("click", () => exportAs(f));
  $("#upload-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = $("#upload-file").files[0];
    if (!file) { message("choose an audio file first"); return; }
    if (file.size > state.info.max_upload_mb * 1048576) { message(`${file.name}: larger than ${state.info.max_upload_mb} MB`); return; }
    state.upload = file; state.seeds = [];
    refresh();
  });
  $("#player").addEventListener("error", () => { if ($("#player").src) message("the browser cannot play this file"); });
  loadMap();
}

main().catch((e) => message(e.message));
