"use strict";
// siamrec serve: the page's logic (plain JS, no build step). Songs are addressed by id (their row).
const $ = (sel) => document.querySelector(sel);
const state = { info: null, songs: [], seeds: [], upload: null, result: null, selected: new Set(), playing: null,
  queue: [], pos: -1, hits: null, pathTo: null };
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
function notice(text) { $("#notice").textContent = text || ""; }

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
function title(song) { return song.title || song.name; }

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
// The queue: "Play all" plays the seed, then its playlist, in order; each song's end starts the next.
function play(id, queuePos) {
  const song = state.songs[id];
  const player = $("#player");
  if (queuePos === undefined) {  // a song clicked: inside the queue it moves there, else the queue is left
    const at = state.queue.indexOf(id);
    if (at >= 0) state.pos = at; else { state.queue = []; state.pos = -1; }
  } else state.pos = queuePos;
  updateTransport();
  if (song.playable === "no") { message(`${song.name}: its audio is not available`); return false; }
  player.src = `/api/audio/${id}`;
  state.playing = id;
  $("#now-playing").textContent = song.name + (song.playable === "wav" ? " (converted to WAV)" : "");
  const cover = $("#cover");
  cover.hidden = true;
  cover.src = `/api/cover/${id}?missing=empty`;
  highlightPlaying();
  player.play().catch((e) => { if (e.name !== "AbortError") message(`cannot play ${song.name}: ${e.message}`); });
  return true;
}

function highlightPlaying() {
  document.querySelectorAll(".playing").forEach((r) => r.classList.remove("playing"));
  if (state.playing === null) return;
  document.querySelectorAll(`tr[data-id="${state.playing}"]`).forEach((r) => r.classList.add("playing"));
  if (($("#seed").dataset.ids || "").split(",").includes(String(state.playing))) $("#seed").classList.add("playing");
}

function playQueue(ids, pos = 0) {
  state.queue = ids;
  for (let p = pos; p < ids.length; p++) if (play(ids[p], p)) return;  // skip songs without audio
}

function step(delta) {
  for (let p = state.pos + delta; p >= 0 && p < state.queue.length; p += delta) if (play(state.queue[p], p)) return;
}

function updateTransport() {
  const inQueue = state.pos >= 0 && state.queue.length > 0;
  $("#prev").disabled = !inQueue || state.pos === 0;
  $("#next").disabled = !inQueue || state.pos >= state.queue.length - 1;
  $("#queue-pos").textContent = inQueue ? `${state.pos + 1} / ${state.queue.length}` : "";
}

function resultQueue() {
  const r = state.result;
  if (!r) return [];
  const seeds = r.seeds.filter((s) => s.id !== null && s.id !== undefined).map((s) => s.id);
  return [...seeds, ...r.playlist.map((s) => s.id)];
}

function songCells(song) {
  const name = el("span", { class: "play", title: `play ${song.key}`, onclick: () => play(song.id) }, title(song));
  const marks = song.playable === "wav" ? el("span", { class: "mark", title: "played as WAV (transcoded)" }, " wav")
    : song.playable === "no" ? el("span", { class: "mark" }, " (no audio)") : "";
  const about = [song.artist, song.album].filter(Boolean).join(" · ");
  const sims = typeof song.similarity_a === "number"
    ? el("div", { class: "meta sims" }, `to A ${song.similarity_a.toFixed(3)} · to B ${song.similarity_b.toFixed(3)}`) : "";
  return [name, marks, about ? el("div", { class: "meta" }, about) : "", sims];
}

// ------------------------------------------------------------------ library
let searchTimer = null, searchSeq = 0;

function searchLater() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(search, 120);
}

async function search() {
  // the server folds case, accents and Unicode forms (Gurmukhi and Devanagari match as typed)
  const q = $("#search").value.trim();
  const seq = ++searchSeq;
  if (!q) { state.hits = null; renderLibrary(); return; }
  try {
    const found = await (await api(`/api/search?${new URLSearchParams({ q, limit: SHOWN })}`)).json();
    if (seq === searchSeq) { state.hits = found; renderLibrary(); }
  } catch (e) { message(e.message); }
}

function renderLibrary() {
  const ids = state.hits ? state.hits.ids : state.songs.slice(0, SHOWN).map((s) => s.id);
  const total = state.hits ? state.hits.total : state.songs.length;
  const body = $("#library-list");
  body.replaceChildren(...ids.map((id) => {
    const s = state.songs[id];
    const box = el("input", { type: "checkbox", title: "add to “more like these”", class: "pick" });
    box.checked = state.selected.has(s.id);
    box.addEventListener("change", () => { box.checked ? state.selected.add(s.id) : state.selected.delete(s.id); updateMore(); });
    return el("tr", { "data-id": s.id, "data-key": s.key, class: s.id === state.playing ? "playing" : "" },
      el("td", {}, box),
      el("td", {}, el("button", { class: "seed-btn", title: "make it the seed", onclick: () => setSeeds([s.id]) }, "★")),
      el("td", {}, el("button", { class: "to-btn", title: "song path: from the seed to this song", onclick: () => setPathTo(s.id) }, "→")),
      el("td", { class: "song" }, ...songCells(s), el("span", { class: "labels" }, s.labels.join(", ")),
        state.info.has_groups ? el("span", { class: "group" }, ` · ${s.group}`) : ""),
      el("td", { class: "col-time" }, duration(s.duration)));
  }));
  $("#library-count").textContent = `${total} of ${state.songs.length} songs`;
  $("#library-more").textContent = total > ids.length ? `showing ${ids.length} of ${total}: refine the search` : "";
}

function updateMore() {
  const b = $("#more-like");
  b.textContent = `more like these (${state.selected.size})`;
  b.disabled = state.selected.size === 0;
}

// ------------------------------------------------------------------ playlist
function k() { return Math.max(1, Math.min(state.info.max_k, parseInt($("#k").value, 10) || state.info.k)); }

async function setSeeds(ids) { state.seeds = ids; state.upload = null; updatePath(); await refresh(); }

// Every playlist asked for takes the next number; an answer is shown only if no playlist was asked for after it (a
// slow answer to an earlier click must not replace a later playlist, nor put back its k)
let playlistSeq = 0;

async function refresh() {
  message("");
  if (state.upload) { return uploadSong(); }
  if (!state.seeds.length) return;
  const params = new URLSearchParams();
  state.seeds.forEach((id) => params.append("seed", id));
  params.set("k", k());
  params.set("exclude_group", $("#exclude-group").checked);
  const seq = ++playlistSeq;
  try {
    const result = await (await api(`/api/recommend?${params}`)).json();
    if (seq === playlistSeq) showPlaylist(result);
  } catch (e) { if (seq === playlistSeq) message(e.message); }
}

function showPlaylist(result) {
  state.result = result;
  const names = result.name || result.seeds.map((s) => s.name).join(" + ");
  const labels = result.seeds.length === 1 && result.seeds[0].labels.length ? ` [${result.seeds[0].labels.join(", ")}]` : "";
  const isNew = result.seeds.length === 1 && result.seeds[0].id === null;
  const what = result.saved ? "saved playlist" : result.path ? "song path" : isNew ? "new song"
    : result.seeds.length > 1 ? "seeds" : "seed";
  $("#seed").textContent = `${what}: ${result.saved || names}${result.saved ? "" : labels}`;
  $("#seed").dataset.ids = isNew ? "" : result.seeds.map((s) => s.id).join(",");
  if (!result.saved && !result.path && result.k) $("#k").value = result.k;  // the k actually used (at most the other songs)
  $("#playlist tbody").replaceChildren(...result.playlist.map((s) => el("tr", { "data-id": s.id, "data-key": s.key },
    el("td", {}, s.rank),
    el("td", {}, el("button", { class: "play-btn", title: "play", onclick: () => play(s.id) }, "▶")),
    el("td", { class: "song" }, ...songCells(s), state.info.has_groups ? el("span", { class: "group" }, ` · ${s.group}`) : ""),
    el("td", { class: "col-time" }, duration(s.duration)),
    el("td", { class: "labels col-labels" }, s.labels.join(", ")),
    el("td", { class: "col-sim" }, typeof s.similarity === "number" ? s.similarity.toFixed(3) : ""),
    el("td", {}, el("button", { class: "seed-btn", title: "make it the seed", onclick: () => setSeeds([s.id]) }, "★")))));
  for (const f of ["m3u8", "csv", "json"]) $(`#export-${f}`).disabled = !result.playlist.length;
  $("#play-all").disabled = resultQueue().length === 0;
  $("#save").disabled = resultQueue().length === 0;
  if (!result.saved) $("#save-name").value = names.slice(0, 200);
  notice((result.warnings || []).map((w) => `${names}: ${w}`).join(" · "));
  highlightSeeds();
  drawPath();
  highlightPlaying();
}

// ------------------------------------------------------------------ song path A → B
// A is the seed (one song), B the song whose → was pressed; the path becomes the playlist (Play all, export, save)
function pathFrom() { return state.seeds.length === 1 && !state.upload ? state.seeds[0] : null; }

function setPathTo(id) { state.pathTo = id; updatePath(); }

function updatePath() {
  const a = pathFrom(), b = state.pathTo;
  const name = (id) => (id === null ? "?" : title(state.songs[id]));
  $("#path-ends").textContent = `A: ${a === null ? "the seed (★)" : name(a)} → B: ${b === null ? "press → on a library song" : name(b)}`;
  $("#path-go").disabled = a === null || b === null || a === b;
}

async function songPath() {
  const a = pathFrom(), b = state.pathTo;
  if (a === null || b === null) return;
  message("");
  const steps = Math.max(1, Math.min(state.info.max_k, parseInt($("#path-k").value, 10) || 12));
  const seq = ++playlistSeq;
  try {
    const r = await (await api(`/api/path?${new URLSearchParams({ from: a, to: b, k: steps })}`)).json();
    if (seq !== playlistSeq) return;
    showPlaylist({ path: true, name: `${r.from.name} → ${r.to.name}`, seeds: [],
      playlist: r.path.map((s) => ({ ...s, rank: s.step })), warnings: r.note ? [r.note] : [] });
  } catch (e) { if (seq === playlistSeq) message(e.message); }
}

// ------------------------------------------------------------------ saved playlists
async function savePlaylist(overwrite = false) {
  const name = $("#save-name").value.trim();
  if (!name) { message("give the playlist a name"); return; }
  const body = { name, ids: resultQueue(), overwrite };
  const response = await fetch("/api/playlists", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body) });
  const answer = await response.json();
  if (response.status === 409 && !overwrite) {
    if (window.confirm(`${answer.detail}. Replace it?`)) return savePlaylist(true);
    return;
  }
  if (!response.ok) { message(answer.detail); return; }
  $("#save-status").textContent = `saved: ${answer.path}`;
  await loadSaved();
}

async function loadSaved() {
  const saved = await (await api("/api/playlists")).json();
  $("#saved-folder").textContent = `(${saved.folder})`;
  $("#saved-list").replaceChildren(...saved.playlists.map((p) => el("li", { "data-file": p.file },
    el("button", { class: "open-saved", onclick: () => openSaved(p) }, p.name),
    ` ${p.ids.length} songs` + (p.missing ? ` (${p.missing} not in this library)` : ""))));
}

function openSaved(p) {
  if (!p.ids.length) { message(`${p.name}: none of its songs is in this library`); return; }
  const [first, ...rest] = p.ids;
  state.seeds = []; state.upload = null;
  ++playlistSeq;  // an answer still on its way is for a playlist no longer wanted
  showPlaylist({ saved: p.name, seeds: [state.songs[first]],
    playlist: rest.map((id, i) => ({ ...state.songs[id], rank: i + 1, similarity: null })) });
  $("#save-name").value = p.name;
}

async function exportAs(format) {
  const r = state.result;
  if (!r) return;
  const seedName = r.name || r.seeds.map((s) => s.name).join(" + ");
  const body = { format, seed_name: r.saved || seedName, seed_labels: r.seeds.length === 1 ? r.seeds[0].labels : [],
    seeds: r.seeds.filter((s) => s.id !== null && s.id !== undefined).map((s) => s.id),
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
  const seq = ++playlistSeq;
  try {
    const result = await (await api("/api/recommend", { method: "POST", body: form })).json();
    $("#upload-status").textContent = "";
    if (seq === playlistSeq) showPlaylist(result);
  } catch (e) {
    $("#upload-status").textContent = "";
    if (seq === playlistSeq) message(e.message);
  } finally { $("#upload-btn").disabled = false; }
}

// ------------------------------------------------------------------ map
let mapTraces = null, mapXY = null;

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
  mapXY = body;
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
  mapTraces.push({ type: "scatter", mode: "lines+markers", name: "path", x: [], y: [], customdata: [], text: [],
    hovertemplate: "%{text}<extra>path</extra>", showlegend: false,
    line: { width: 2, color: "#d0312d" }, marker: { size: 7, color: "#d0312d" } });
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
  drawPath();
}

function drawPath() {
  const map = $("#map");
  if (!mapTraces || !map.data) return;
  const at = map.data.findIndex((t) => t.name === "path");
  const ids = state.result && state.result.path ? state.result.playlist.map((s) => s.id) : [];
  Plotly.restyle("map", { x: [ids.map((i) => mapXY.x[i])], y: [ids.map((i) => mapXY.y[i])], customdata: [ids],
    text: [ids.map((i, n) => `${n}. ${esc(state.songs[i].name)}`)] }, [at]);
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
  const player = $("#player");
  player.addEventListener("ended", () => step(1));  // auto-advance through the queue
  $("#prev").addEventListener("click", () => step(-1));
  $("#next").addEventListener("click", () => step(1));
  $("#play-all").addEventListener("click", () => playQueue(resultQueue()));
  $("#cover").addEventListener("load", () => { $("#cover").hidden = false; });
  $("#cover").addEventListener("error", () => { $("#cover").hidden = true; });
  $("#save-form").addEventListener("submit", (ev) => { ev.preventDefault(); savePlaylist().catch((e) => message(e.message)); });
  $("#info").textContent = `${state.info.songs} songs · ${state.info.search} search · ${state.info.run}`;
  $("#k").value = state.info.k;
  $("#k").max = state.info.max_k;
  $("#group-option").hidden = !state.info.has_groups;
  if (!state.info.can_embed) { $("#upload-form").hidden = true; $("#upload-title").hidden = true; }
  renderLibrary();
  $("#search").addEventListener("input", searchLater);
  $("#k").addEventListener("change", refresh);
  $("#exclude-group").addEventListener("change", refresh);
  $("#more-like").addEventListener("click", () => setSeeds([...state.selected]));
  $("#path-form").addEventListener("submit", (ev) => { ev.preventDefault(); songPath(); });
  $("#path-k").max = state.info.max_k;
  for (const f of ["m3u8", "csv", "json"]) $(`#export-${f}`).addEventListener("click", () => exportAs(f));
  $("#upload-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = $("#upload-file").files[0];
    if (!file) { message("choose an audio file first"); return; }
    if (file.size > state.info.max_upload_mb * 1048576) { message(`${file.name}: larger than ${state.info.max_upload_mb} MB`); return; }
    state.upload = file; state.seeds = [];
    updatePath();
    refresh();
  });
  $("#player").addEventListener("error", () => { if ($("#player").src) message("the browser cannot play this file"); });
  loadSaved().catch((e) => message(e.message));
  loadMap();
}

main().catch((e) => message(e.message));
