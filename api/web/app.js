// LITE Gallery's page: the same contract every client uses (docs/ARCHITECTURE.md §6).
// 1. GET /config tells whether a token is needed.
// 2. GET /projects/{p}/images lists the project (newest first) and gives `seq`.
// 3. The project's WebSocket, opened with ?since=seq, streams every event after it; on a drop
//    it reconnects with the last seq it saw, so nothing is missed.
// 4. Each file: POST /images/ for a link, then the link's form (params, then the file) sent
//    straight to the link (S3 or the api), with upload progress.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  project: null,
  token: "",
  authRequired: false,
  seq: 0,
  cursor: null,
  ws: null,
  retry: 0,
  offlineUntil: 0, // a test's dropped connection stays down until then
  tiles: new Map(), // image id -> tile element
  viewing: null, // the image id the viewer shows
  configured: null, // settles once /config has answered (init)
};

function setStatus(text) {
  $("status").textContent = text;
}

function headers(json) {
  const h = {};
  if (json) h["content-type"] = "application/json";
  if (state.token) h["authorization"] = "Bearer " + state.token;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.body) });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const err = (body && body.error) || { code: "http_" + response.status, message: response.statusText };
    throw Object.assign(new Error(err.message), { code: err.code, status: response.status });
  }
  return body;
}

// ---- placeholders --------------------------------------------------------------------------
// A processed image comes with its ThumbHash (base64, about 25 bytes; the format is evanw's
// ThumbHash): an average colour and a few low-frequency cosine terms per channel, in a
// luminance / yellow-blue / red-green (/ alpha) space. Decoded into a tiny canvas, it paints the
// tile until the thumb has loaded.

function thumbhashBytes(b64) {
  try {
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  } catch (_) {
    return new Uint8Array(0);
  }
}

// The decoded placeholder as a data: URL, or null for a hash that isn't one.
function placeholderURL(b64) {
  const bytes = thumbhashBytes(b64);
  if (bytes.length < 5) return null;
  const head = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16); // 24 bits
  const more = bytes[3] | (bytes[4] << 8); // 16 bits
  const hasAlpha = (head >> 23) & 1;
  const landscape = (more >> 15) & 1;
  // Luminance terms: the long side has 7 (5 with alpha), the short side says how many it has.
  const longSide = hasAlpha ? 5 : 7;
  const shortSide = more & 7;
  const [nx, ny] = landscape ? [longSide, shortSide] : [shortSide, longSide];
  const base = {
    l: (head & 63) / 63,
    p: ((head >> 6) & 63) / 31.5 - 1,
    q: ((head >> 12) & 63) / 31.5 - 1,
    a: 1,
  };
  // The colour terms are boosted a little: quantisation dulls them.
  const scale = { l: ((head >> 18) & 31) / 31, p: (((more >> 3) & 63) / 63) * 1.25, q: (((more >> 9) & 63) / 63) * 1.25, a: 1 };
  let at = 5;
  if (hasAlpha) {
    if (bytes.length < 6) return null;
    base.a = (bytes[5] & 15) / 15;
    scale.a = (bytes[5] >> 4) / 15;
    at = 6;
  }
  // Then 4-bit terms, low nibble first, channel after channel; in each, the (cx, cy) with
  // cx * ny < nx * (ny - cy), row by row, without the (0, 0) average.
  let nibbles = 0;
  const read = () => {
    const byte = bytes[at + (nibbles >> 1)];
    const v = nibbles & 1 ? byte >> 4 : byte & 15;
    nibbles += 1;
    return v;
  };
  const terms = (cols, rows, s) => {
    const out = [];
    for (let cy = 0; cy < rows; cy++) {
      for (let cx = cy > 0 ? 0 : 1; cx * rows < cols * (rows - cy); cx++) out.push([cx, cy, (read() / 7.5 - 1) * s]);
    }
    return out;
  };
  const channels = {
    l: terms(Math.max(3, nx), Math.max(3, ny), scale.l),
    p: terms(3, 3, scale.p),
    q: terms(3, 3, scale.q),
    a: hasAlpha ? terms(5, 5, scale.a) : [],
  };
  if (at + Math.ceil(nibbles / 2) > bytes.length || nx < 1 || ny < 1) return null;
  // 32 pixels on the long side, the hash's aspect ratio.
  const ratio = nx / ny;
  const w = ratio > 1 ? 32 : Math.max(1, Math.round(32 * ratio));
  const h = ratio > 1 ? Math.max(1, Math.round(32 / ratio)) : 32;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const g2d = canvas.getContext("2d");
  if (!g2d) return null;
  const pixels = g2d.createImageData(w, h);
  const clamp = (v) => Math.round(255 * Math.min(1, Math.max(0, v)));
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const value = (name) =>
        channels[name].reduce(
          (v, [cx, cy, f]) => v + 2 * f * Math.cos((Math.PI / w) * (x + 0.5) * cx) * Math.cos((Math.PI / h) * (y + 0.5) * cy),
          base[name],
        );
      const [l, p, q, a] = [value("l"), value("p"), value("q"), value("a")];
      const b = l - (2 / 3) * p;
      const r = (3 * l - b + q) / 2;
      const i = (y * w + x) * 4;
      pixels.data[i] = clamp(r);
      pixels.data[i + 1] = clamp(r - q);
      pixels.data[i + 2] = clamp(b);
      pixels.data[i + 3] = clamp(a);
    }
  }
  g2d.putImageData(pixels, 0, 0);
  return canvas.toDataURL();
}

function showPlaceholder(tile, thumbhash) {
  if (!thumbhash || tile.dataset.placeholder === thumbhash) return;
  const url = placeholderURL(thumbhash);
  if (!url) return;
  tile.dataset.placeholder = thumbhash;
  tile.querySelector(".thumb").style.backgroundImage = `url("${url}")`;
}

// ---- the gallery -------------------------------------------------------------------------

function stateLabel(s) {
  return { init: "waiting for upload", uploaded: "uploaded", processing: "processing", done: "done", error: "error" }[s] || s;
}

function tileFor(id, filename, atTop) {
  let tile = state.tiles.get(id);
  if (tile) return tile;
  tile = document.createElement("li");
  tile.className = "tile";
  tile.dataset.imageId = id;
  tile.innerHTML =
    '<button type="button"><div class="thumb"><span class="placeholder"></span></div>' +
    '<div class="cap"><span class="file"></span><span class="state"></span><span class="why"></span></div></button>';
  tile.querySelector(".file").textContent = filename || id;
  tile.querySelector("button").addEventListener("click", () => openViewer(id));
  const gallery = $("gallery");
  if (atTop) gallery.prepend(tile);
  else gallery.append(tile);
  state.tiles.set(id, tile);
  return tile;
}

function showState(tile, s, error) {
  tile.dataset.state = s;
  const label = tile.querySelector(".state");
  label.textContent = stateLabel(s);
  label.className = "state state-" + s;
  const why = tile.querySelector(".why");
  why.textContent = error ? `${error.code}: ${error.message}` : "";
  if (!tile.querySelector("img")) tile.querySelector(".placeholder").textContent = stateLabel(s);
}

function setName(tile, name) {
  tile.querySelector(".file").textContent = name;
  const img = tile.querySelector("img");
  if (img) img.alt = "Thumbnail of " + name;
}

function showThumb(tile, url) {
  const box = tile.querySelector(".thumb");
  let img = box.querySelector("img");
  if (!img) {
    img = document.createElement("img");
    img.alt = "Thumbnail of " + (tile.record ? tile.record.filename : tile.querySelector(".file").textContent);
    img.loading = "lazy";
    box.replaceChildren(img);
  }
  img.src = url;
}

function showRecord(rec, atTop) {
  const tile = tileFor(rec.image_id, rec.filename, atTop);
  tile.record = rec;
  setName(tile, rec.filename);
  showState(tile, rec.state, rec.error);
  showPlaceholder(tile, rec.thumbhash);
  if (rec.versions && rec.versions.thumb) showThumb(tile, rec.versions.thumb);
}

function removeTile(id) {
  const tile = state.tiles.get(id);
  if (tile) tile.remove();
  state.tiles.delete(id);
}

function onEvent(msg) {
  if (msg.project_id !== state.project) return;
  state.seq = Math.max(state.seq, msg.seq);
  if (msg.type === "deleted") {
    removeTile(msg.image_id);
    return;
  }
  const tile = tileFor(msg.image_id, null, true);
  showState(tile, msg.state, msg.error);
  if (msg.type === "version_rendered") {
    tile.versions = tile.versions || {};
    tile.versions[msg.version] = msg.url;
    if (msg.version === "thumb") showThumb(tile, msg.url);
  }
  if (msg.type === "upload_requested" && !tile.record) {
    // Its file name comes with the record.
    api(`/images/${msg.image_id}`).then((rec) => { tile.record = rec; setName(tile, rec.filename); }).catch(() => {});
  }
  if (msg.type === "processed") {
    showPlaceholder(tile, msg.thumbhash);
    api(`/images/${msg.image_id}`).then((rec) => showRecord(rec, false)).catch(() => {});
  }
}

async function openViewer(id) {
  const tile = state.tiles.get(id);
  let rec = tile.record;
  try {
    rec = await api(`/images/${id}`);
    tile.record = rec;
  } catch (_) { /* keep what we have */ }
  const versions = (rec && rec.versions) || tile.versions || {};
  const url = versions.big_thumb || versions.big_1920 || versions.thumb;
  const name = (rec && rec.filename) || id;
  $("viewer-title").textContent = name;
  const img = $("viewer-img");
  if (url) {
    img.src = url;
    img.alt = "Larger view of " + name;
    img.hidden = false;
  } else {
    img.hidden = true;
  }
  const meta = rec && rec.meta;
  $("viewer-meta").textContent = rec
    ? `${stateLabel(rec.state)}${meta && meta.width ? ` · ${meta.width}×${meta.height}` : ""}${rec.error ? ` · ${rec.error.code}: ${rec.error.message}` : ""}`
    : "";
  state.viewing = id;
  $("viewer").showModal();
}

async function deleteViewed() {
  const id = state.viewing;
  if (!id || !confirm("Delete this image and every version of it?")) return;
  try {
    await api(`/images/${id}`, { method: "DELETE" });
    removeTile(id);
    $("viewer").close();
  } catch (err) {
    $("viewer-meta").textContent = `Not deleted: ${err.code || "error"}: ${err.message}`;
  }
}

async function loadPage() {
  const query = new URLSearchParams({ limit: "50" });
  if (state.cursor) query.set("cursor", state.cursor);
  const page = await api(`/projects/${state.project}/images?${query}`);
  if (!state.cursor) state.seq = page.seq;
  for (const rec of page.images) showRecord(rec, false);
  state.cursor = page.next_cursor;
  $("older").hidden = !page.next_cursor;
}

// ---- the live stream ---------------------------------------------------------------------

function connect() {
  if (state.ws) state.ws.close();
  const base = location.origin.replace(/^http/, "ws");
  const protocols = ["gallery.v1"];
  if (state.token) protocols.push("gallery.bearer." + state.token);
  const project = state.project;
  const ws = new WebSocket(`${base}/projects/${project}/ws?since=${state.seq}`, protocols);
  state.ws = ws;
  ws.onopen = () => {
    state.retry = 0;
    setStatus(`Project ${project}: live.`);
    document.body.dataset.live = "true";
  };
  ws.onmessage = (e) => onEvent(JSON.parse(e.data));
  ws.onclose = () => {
    document.body.dataset.live = "false";
    if (state.ws !== ws || state.project !== project) return;
    const delay = Math.max(Math.min(1000 * 2 ** state.retry, 15000), state.offlineUntil - Date.now());
    state.retry += 1;
    setStatus(`Project ${project}: connection lost, reconnecting in ${Math.round(delay / 1000)} s…`);
    setTimeout(() => { if (state.ws === ws) connect(); }, delay);
  };
}

// ---- uploads -----------------------------------------------------------------------------

function uploadRow(file) {
  const li = document.createElement("li");
  li.innerHTML = '<span class="name"></span><progress max="100" value="0"></progress><span class="msg">asking for a link…</span>';
  li.querySelector(".name").textContent = file.name;
  li.querySelector("progress").setAttribute("aria-label", "Upload of " + file.name);
  $("uploads").prepend(li);
  return li;
}

function send(link, file, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [k, v] of Object.entries(link.params)) form.append(k, v);
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open(link.method || "POST", link.upload_link);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve();
      let message = `HTTP ${xhr.status}`;
      try { message = JSON.parse(xhr.responseText).error.message; } catch (_) { /* S3 answers XML */ }
      reject(new Error(message));
    };
    xhr.onerror = () => reject(new Error("the upload failed (network)"));
    xhr.send(form);
  });
}

// The file's SHA-256 in hex, or null where the browser can't tell (no WebCrypto outside
// secure contexts): the api then answers with a link as usual.
async function fileSha256(file) {
  if (!window.crypto || !crypto.subtle) return null;
  try {
    const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  } catch (_) {
    return null;
  }
}

async function upload(file) {
  const row = uploadRow(file);
  const msg = row.querySelector(".msg");
  const bar = row.querySelector("progress");
  try {
    const body = { filename: file.name, project_id: state.project, size: file.size };
    if (file.type) body.content_type = file.type;
    const sha256 = await fileSha256(file);
    if (sha256) body.sha256 = sha256;
    const link = await api("/images/", { method: "POST", body: JSON.stringify(body) });
    if (link.duplicate_of) {
      // The project has these bytes already: nothing to upload.
      bar.value = 100;
      msg.textContent = "already in this project";
      const tile = state.tiles.get(link.duplicate_of);
      if (tile) tile.scrollIntoView({ block: "nearest" });
      return;
    }
    tileFor(link.image_id, file.name, true);
    msg.textContent = "uploading…";
    await send(link, file, (f) => { bar.value = Math.round(f * 100); });
    bar.value = 100;
    msg.textContent = "uploaded";
    // S3 doesn't tell the service; this records the upload at once instead of at the
    // watcher's next look (local mode has recorded it already).
    api(`/images/${link.image_id}/complete`, { method: "POST" }).catch(() => {});
  } catch (err) {
    msg.textContent = err.code ? `${err.code}: ${err.message}` : err.message;
    msg.classList.add("error");
  }
}

function uploadAll(files) {
  if (!state.project) return;
  for (const file of files) upload(file);
}

// ---- wiring ------------------------------------------------------------------------------

async function openProject(event) {
  event.preventDefault();
  // A click before /config has answered waits for it (the token field may have to show).
  await state.configured;
  if (state.authRequired && !$("token").value.trim()) {
    setStatus("This deployment requires a token: paste it, then open the project.");
    $("token").focus();
    return;
  }
  const project = $("project").value.trim();
  state.token = $("token").value.trim();
  sessionStorage.setItem("gallery.token", state.token);
  if (state.ws) { const old = state.ws; state.ws = null; old.close(); }
  state.project = project;
  state.cursor = null;
  state.seq = 0;
  state.tiles.clear();
  $("gallery").replaceChildren();
  history.replaceState(null, "", "#" + encodeURIComponent(project));
  try {
    setStatus(`Project ${project}: loading…`);
    await loadPage();
    $("upload").hidden = false;
    $("gallery-section").hidden = false;
    connect();
  } catch (err) {
    setStatus(`Project ${project}: ${err.code || "error"}: ${err.message}`);
  }
}

async function loadConfig() {
  try {
    const config = await api("/config");
    state.authRequired = !!config.auth_required;
  } catch (_) { /* an older api: no tokens */ }
  $("token-field").hidden = !state.authRequired;
  $("token").required = state.authRequired;
  $("token").value = sessionStorage.getItem("gallery.token") || "";
}

function init() {
  // Handlers first, so that a click on Open never submits the form natively (a page reload).
  $("project-form").addEventListener("submit", openProject);
  $("viewer-delete").addEventListener("click", deleteViewed);
  $("older").addEventListener("click", () => loadPage().catch((e) => setStatus(e.message)));
  $("files").addEventListener("change", (e) => { uploadAll(e.target.files); e.target.value = ""; });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); uploadAll(e.dataTransfer.files); });
  state.configured = loadConfig();
  state.configured.then(() => {
    document.body.dataset.ready = "true";
    const fromHash = decodeURIComponent(location.hash.slice(1));
    if (fromHash) {
      $("project").value = fromHash;
      if (!state.authRequired || $("token").value) $("project-form").requestSubmit();
    }
  });
}

// For the browser test (e2e/tests/browser.rs): drop the live connection as a network
// failure would, and keep it down for `ms`.
window.gallery = {
  dropConnection(ms) {
    state.offlineUntil = Date.now() + ms;
    if (state.ws) state.ws.close();
  },
};

init();
