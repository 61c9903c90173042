// sixview's page: upload a photo or stream the camera, show what the server sees.
// Plain JavaScript, no build step, nothing loaded from elsewhere (views.js draws the views).
"use strict";

const $ = (sel) => document.querySelector(sel);
const LIVE_MAX_SIDE = 640; // frames are scaled down to this before they are sent
const state = { models: {}, file: null, bitmap: null, live: null };

// -- settings and the API --------------------------------------------------------------
function apiKey() { return $("#api-key").value.trim(); }

function settings() {
  const t = $("#threshold").value.trim();
  return { engine: $("#engine").value, tiling: $("#tiling").checked, threshold: t === "" ? null : Number(t) };
}

function headers() {
  const key = apiKey();
  return key ? { Authorization: "Bearer " + key } : {};
}

function setStatus(text, bad) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("bad", Boolean(bad));
}

async function loadModels() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      setStatus(r.status === 401 ? "needs an API key" : (body.error ? body.error.message : "server error " + r.status), true);
      return;
    }
    state.models = {};
    for (const m of body.models) state.models[m.role] = m;
    const names = body.models.map((m) => `${m.role} ${m.precision}/${m.provider}`).join(", ");
    setStatus((body.ready ? "ready: " : "warming up: ") + names, false);
  } catch (e) {
    setStatus("server unreachable", true);
  }
}

// -- the results panel ---------------------------------------------------------------
function showRecord(rec, latencyText) {
  $("#empty").hidden = true;
  const list = $("#labels");
  list.replaceChildren();
  const errorP = $("#error");
  errorP.hidden = !rec.error;
  errorP.textContent = rec.error ? "Could not classify this image: " + rec.error : "";
  const items = shown(rec);
  const confident = items.filter((it) => !it.guess);
  for (const it of confident) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = it.colour;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = it.name;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = fmt(it.score);
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.round(100 * Math.min(1, Math.max(0, it.score || 0)))}%`;
    bar.append(fill);
    const view = document.createElement("span");
    view.className = "view";
    view.textContent = it.view ? `seen best in the ${it.view.replace("_", " ")} view` : "";
    li.append(sw, name, score, bar, view);
    list.append(li);
  }
  const guess = items.find((it) => it.guess);
  $("#guess").hidden = !guess;
  $("#guess").textContent = guess ? `maybe ${guess.name} ${fmt(guess.score)}` : "";
  $("#none").hidden = Boolean(rec.error) || confident.length > 0 || Boolean(guess);
  $("#none").textContent = "none of my classes" +
    (typeof rec.presence === "number" ? ` (presence ${fmt(rec.presence)})` : "");
  const tbody = $("#scores");
  tbody.replaceChildren();
  const scores = Object.entries(rec.scores || {}).sort((a, b) => b[1] - a[1]);
  for (const [name, score] of scores) {
    const tr = document.createElement("tr");
    if ((rec.labels || []).includes(name)) tr.className = "confident";
    const th = (rec.thresholds || {})[name];
    for (const [text, cls] of [[name, ""], [fmt(score), "num"], [th === undefined ? "" : "≥ " + fmt(th), "num"],
      [(rec.views || {})[name] || "", ""]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    tbody.append(tr);
  }
  $("#all-scores").hidden = scores.length === 0;
  $("#latency").textContent = latencyText || "";
}

function showError(message) {
  $("#empty").hidden = true;
  $("#error").hidden = false;
  $("#error").textContent = message;
}

// -- photos ----------------------------------------------------------------------------
async function classifyFile(file) {
  if (!file) return;
  state.file = file;
  try {
    if (state.bitmap && state.bitmap.close) state.bitmap.close();
    state.bitmap = await createImageBitmap(file);
  } catch (e) {
    state.bitmap = null; // the server may still read it (and say why not)
  }
  drawPicture(null);
  const form = new FormData();
  form.append("image", file, file.name || "upload");
  const s = settings();
  const query = new URLSearchParams({ engine: s.engine, tiling: String(s.tiling) });
  if (s.threshold !== null) query.set("threshold", String(s.threshold));
  const t0 = performance.now();
  let r, body;
  try {
    r = await fetch("/v1/classify?" + query, { method: "POST", body: form, headers: headers() });
    body = await r.json();
  } catch (e) {
    showError("The server did not answer (" + e.message + ").");
    return;
  }
  const rtt = performance.now() - t0;
  const rec = body.results && body.results[0];
  if (!rec) {
    showError(body.error ? body.error.message : "server error " + r.status);
    return;
  }
  const t = body.timings_ms || {};
  const m = rec.timings_ms || {};
  showRecord(rec, `${Math.round(rtt)} ms round trip · server ${fmt1(t.total)} ms (model ${fmt1(m.infer)} ms, ` +
    `batch of ${body.batch_images || 1}) · ${rec.engine || "?"} engine${rec.tiling === false ? ", whole image only" : ""}`);
  drawPicture(rec);
}

function viewFraction(rec) { return (state.models[rec.engine] || {}).view_fraction; }

function fmt1(x) { return typeof x === "number" ? x.toFixed(1) : "?"; }

function drawPicture(rec) {
  const canvas = $("#picture");
  const bmp = state.bitmap;
  if (!bmp) { canvas.width = 0; canvas.height = 0; return; }
  const maxW = 1280;
  const k = Math.min(1, maxW / bmp.width);
  canvas.width = Math.round(bmp.width * k);
  canvas.height = Math.round(bmp.height * k);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bmp, 0, 0, canvas.width, canvas.height);
  if (rec && rec.width) drawViews(ctx, rec, canvas.width / rec.width, viewFraction(rec));
}

function setUpUpload() {
  for (const id of ["#file", "#capture"]) {
    $(id).addEventListener("change", (e) => classifyFile(e.target.files[0]));
  }
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = [...(e.dataTransfer.files || [])].find((f) => f.type.startsWith("image/")) || e.dataTransfer.files[0];
    classifyFile(file);
  });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData ? e.clipboardData.files : [])][0];
    if (item) classifyFile(item);
  });
}

// -- live camera -------------------------------------------------------------------------
function cameraMessage(text) {
  const p = $("#camera-message");
  p.hidden = !text;
  p.textContent = text || "";
}

async function startCamera() {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    cameraMessage("The live camera needs a secure page, and this one is not: open it over HTTPS " +
      "(sixview serve --ssl-certfile … --ssl-keyfile …, see docs/serve.md) or as http://localhost on this machine. " +
      "Photos work here: use the Photo tab (Take a photo opens the camera app on a phone).");
    return;
  }
  cameraMessage("");
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "environment", width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (e) {
    cameraMessage("No camera: " + (e.message || e.name) + ".");
    return;
  }
  const video = $("#video");
  video.srcObject = media;
  await video.play().catch(() => {});
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/v1/stream");
  const live = { media, ws, grab: document.createElement("canvas"), busy: false, sent: 0, answered: 0,
    started: performance.now(), sentAt: 0, timer: null };
  state.live = live;
  $("#camera-start").disabled = true;
  $("#camera-stop").disabled = false;
  ws.onopen = () => { sendSettings(); sendFrame(live); };
  ws.onmessage = (event) => onStreamMessage(live, JSON.parse(event.data));
  ws.onclose = (event) => {
    if (state.live === live) {
      cameraMessage("The stream closed" + (event.reason ? ": " + event.reason : "") + ".");
      stopCamera();
    }
  };
}

function sendSettings() {
  const live = state.live;
  if (!live || live.ws.readyState !== WebSocket.OPEN) return;
  const msg = settings();
  const key = apiKey();
  if (key) msg.api_key = key;
  live.ws.send(JSON.stringify(msg));
}

// One frame in flight at a time: the next is grabbed when the answer comes (or after 3 s).
function sendFrame(live) {
  if (state.live !== live || live.ws.readyState !== WebSocket.OPEN) return;
  const video = $("#video");
  if (!video.videoWidth) { live.timer = setTimeout(() => sendFrame(live), 50); return; }
  const k = Math.min(1, LIVE_MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
  live.grab.width = Math.round(video.videoWidth * k);
  live.grab.height = Math.round(video.videoHeight * k);
  live.grab.getContext("2d").drawImage(video, 0, 0, live.grab.width, live.grab.height);
  live.grab.toBlob((blob) => {
    if (!blob || state.live !== live || live.ws.readyState !== WebSocket.OPEN) return;
    live.ws.send(blob);
    live.sent += 1;
    live.sentAt = performance.now();
    clearTimeout(live.timer);
    live.timer = setTimeout(() => sendFrame(live), 3000);
  }, "image/jpeg", 0.8);
}

function onStreamMessage(live, msg) {
  if (state.live !== live) return;
  if (msg.type === "result") {
    live.answered += 1;
    const rtt = performance.now() - live.sentAt;
    const fps = live.answered / ((performance.now() - live.started) / 1000);
    const rec = msg.record;
    showRecord(rec, `${Math.round(rtt)} ms frame to answer · server ${fmt1(msg.latency_ms)} ms · ` +
      `${fps.toFixed(1)} frames/s · ${msg.dropped} dropped by the server`);
    drawOverlay(rec);
  } else if (msg.type === "error") {
    showError(msg.error.message);
  }
  clearTimeout(live.timer);
  live.timer = setTimeout(() => sendFrame(live), 0);
}

function drawOverlay(rec) {
  const video = $("#video");
  const canvas = $("#overlay");
  canvas.width = video.clientWidth;
  canvas.height = video.clientHeight;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (rec && rec.width) drawViews(ctx, rec, canvas.width / rec.width, viewFraction(rec));
}

function stopCamera() {
  const live = state.live;
  state.live = null;
  if (live) {
    clearTimeout(live.timer);
    live.media.getTracks().forEach((t) => t.stop());
    if (live.ws.readyState <= WebSocket.OPEN) live.ws.close();
  }
  $("#video").srcObject = null;
  drawOverlay(null);
  $("#camera-start").disabled = false;
  $("#camera-stop").disabled = true;
}

// -- tabs, settings, install -----------------------------------------------------------
function showTab(which) {
  const photo = which === "photo";
  $("#tab-photo").setAttribute("aria-selected", String(photo));
  $("#tab-live").setAttribute("aria-selected", String(!photo));
  $("#photo-pane").hidden = !photo;
  $("#live-pane").hidden = photo;
  if (photo) stopCamera();
}

function init() {
  $("#api-key").value = localStorage.getItem("sixview.apiKey") || "";
  $("#api-key").addEventListener("change", () => {
    localStorage.setItem("sixview.apiKey", apiKey());
    loadModels();
    sendSettings();
  });
  for (const id of ["#engine", "#tiling", "#threshold"]) {
    $(id).addEventListener("change", () => {
      if (state.live) sendSettings();
      else if (state.file) classifyFile(state.file);
    });
  }
  $("#tab-photo").addEventListener("click", () => showTab("photo"));
  $("#tab-live").addEventListener("click", () => showTab("live"));
  $("#camera-start").addEventListener("click", startCamera);
  $("#camera-stop").addEventListener("click", stopCamera);
  setUpUpload();
  let prompt = null;
  window.addEventListener("beforeinstallprompt", (e) => {
    e.preventDefault();
    prompt = e;
    $("#install").hidden = false;
  });
  $("#install").addEventListener("click", async () => {
    if (!prompt) return;
    prompt.prompt();
    await prompt.userChoice.catch(() => {});
    prompt = null;
    $("#install").hidden = true;
  });
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
  loadModels();
  window.addEventListener("online", loadModels);
  window.addEventListener("offline", () => setStatus("offline: the server cannot be reached", true));
}

init();
