// The suite's web page: one panel per task, each calling the gateway's versioned routes on the same origin.
// Nothing is stored: files go from the browser to the server's memory and the answer comes back.
"use strict";

const $ = (id) => document.getElementById(id);

function showPanel(name) {
  for (const tab of document.querySelectorAll("nav button")) {
    tab.setAttribute("aria-selected", String(tab.dataset.panel === name));
  }
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.id !== name;
}

// API errors in plain words: the server's message says what was wrong; the status says what kind of problem it is.
function plain(status, message) {
  if (status === 401) return "This server needs an API key: enter it above and try again.";
  const kinds = {
    400: "The server could not read this input",
    413: "This is too large for the server",
    415: "This file type is not supported",
    422: "The server cannot use this input",
    503: "The service is busy or still starting; please try again in a moment",
  };
  const kind = kinds[status] || (status >= 500 ? "The server failed to answer" : "The request was refused");
  return message ? `${kind}: ${message}` : `${kind}.`;
}

// An API key, when the server asks for one (401), is kept for this browser session only.
const KEY = "suite-api-key";
$("api-key").value = sessionStorage.getItem(KEY) || "";
$("key-row").hidden = !$("api-key").value;
$("api-key").addEventListener("change", () => sessionStorage.setItem(KEY, $("api-key").value));

async function call(url, body, headers = {}) {
  if ($("api-key").value) headers = { ...headers, "X-API-Key": $("api-key").value };
  let response;
  try {
    response = await fetch(url, { method: "POST", body, headers });
  } catch (e) {
    throw new Error("Could not reach the server. Is it running?");
  }
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (response.status === 401) $("key-row").hidden = false;
  if (!response.ok) throw new Error(plain(response.status, data && data.error));
  $("status").textContent = `${data.model} · ${data.backend || ""} · ${Math.round(data.elapsed_ms)} ms`;
  return data;
}

function panelError(panel, message) {
  const box = $(panel).querySelector(".error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function run(panel, work) {
  panelError(panel, "");
  $(panel).setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (e) {
    panelError(panel, e.message);
  } finally {
    $(panel).removeAttribute("aria-busy");
  }
}

function form(field, files) {
  const body = new FormData();
  for (const f of files) body.append(field, f, f.name);
  return body;
}

// Drop zones: a dropped file goes to the zone's file input, as if chosen.
function dropZone(zone) {
  const input = $(zone.dataset.input);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (input.disabled) return; // its model is not loaded yet
    input.files = e.dataTransfer.files;
    input.dispatchEvent(new Event("change"));
  });
}

// Tumour: boxes drawn by the server (annotate=true works for DICOM and NIfTI too, which browsers cannot show).
$("tumor-file").addEventListener("change", () => run("tumor", async () => {
  const data = await call("/v1/tumor/detect?annotate=true", form("image", $("tumor-file").files));
  $("tumor-image").src = "data:image/png;base64," + data.annotated_png;
  $("tumor-image").hidden = false;
  const rows = $("tumor-boxes").querySelector("tbody");
  rows.replaceChildren(...data.boxes.map((b) => {
    const tr = document.createElement("tr");
    for (const v of [b.label, (100 * b.confidence).toFixed(1) + " %",
      `${Math.round(b.x0)}, ${Math.round(b.y0)} – ${Math.round(b.x1)}, ${Math.round(b.y1)}`]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
  $("tumor-boxes").hidden = data.boxes.length === 0;
  $("tumor-none").hidden = data.boxes.length !== 0;
}));

// Image classifiers (malaria and every other task of that kind): many images in one request, with Grad-CAM.
function classifierPanel(task) {
  const panel = $("classifier-panel").content.firstElementChild.cloneNode(true);
  const name = task.name;
  panel.id = name;
  panel.querySelector("h2").textContent = task.heading;
  panel.querySelector("input").id = `${name}-files`;
  panel.querySelector(".drop").dataset.input = `${name}-files`;
  panel.querySelector(".cells").id = `${name}-cells`;
  $("tumor").after(panel);
  const tab = document.createElement("button");
  tab.textContent = task.title;
  tab.setAttribute("role", "tab");
  tab.dataset.panel = name;
  document.querySelector(`nav button[data-panel="tumor"]`).after(tab);
  $(`${name}-files`).addEventListener("change", () => run(name, async () => {
    const files = [...$(`${name}-files`).files];
    const data = await call(`/v1/${name}/classify/batch?gradcam=true`, form("images", files));
    $(`${name}-cells`).replaceChildren(...data.results.map((r) => {
      const card = document.createElement("figure");
      card.className = "cell";
      const img = document.createElement("img");
      img.src = "data:image/png;base64," + r.gradcam.overlay_png;
      img.alt = `Grad-CAM of ${files[r.index].name}`;
      const caption = document.createElement("figcaption");
      const label = document.createElement("span");
      if (r.label === task.positive_label) label.className = "positive";
      label.textContent = r.label;
      caption.append(label, ` ${(100 * r.probability).toFixed(1)} % — ${files[r.index].name}`);
      card.append(img, caption);
      return card;
    }));
  }));
}

// Speech: record with the microphone or upload a file.
function showTranscript(data) {
  $("asr-text").textContent = data.text || "(no speech recognised)";
  $("asr-segments").replaceChildren(...data.segments.map((s) => {
    const li = document.createElement("li");
    li.textContent = `${s.start.toFixed(2)}–${s.end.toFixed(2)} s  ${s.text}`;
    return li;
  }));
}
// The recording and the optional vocabulary prompt (Whisper's initial prompt), sent as one multipart form.
function speechForm(files) {
  const body = form("audio", files);
  const prompt = $("asr-prompt").value.trim();
  if (prompt) body.append("prompt", prompt);
  return body;
}

$("asr-file").addEventListener("change", () => run("asr", async () => {
  showTranscript(await call("/v1/asr/transcribe", speechForm($("asr-file").files)));
}));
let recorder = null;
$("asr-record").addEventListener("click", () => run("asr", async () => {
  if (recorder) {
    recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) throw new Error("This browser cannot record audio here.");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    throw new Error("The microphone is not available: " + e.message);
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = () => run("asr", async () => {
    stream.getTracks().forEach((t) => t.stop());
    recorder = null;
    $("asr-record").textContent = "Record";
    $("asr-recording").textContent = "";
    const blob = new Blob(chunks, { type: chunks.length ? chunks[0].type : "audio/webm" });
    showTranscript(await call("/v1/asr/transcribe", speechForm([new File([blob], "recording.webm")])));
  });
  recorder.start();
  $("asr-record").textContent = "Stop";
  $("asr-recording").textContent = "recording…";
}));

// Keyphrases: offsets count Unicode code points, so the text is split into code points before marking.
$("keyphrase-go").addEventListener("click", () => run("keyphrase", async () => {
  const text = $("keyphrase-text").value;
  const data = await call("/v1/keyphrase/extract", JSON.stringify({ text, top_k: 10 }), {
    "Content-Type": "application/json",
  });
  $("keyphrase-list").replaceChildren(...data.keyphrases.map((k) => {
    const li = document.createElement("li");
    li.textContent = `${k.phrase} (${k.score.toFixed(2)})`;
    return li;
  }));
  const points = Array.from(text);
  const spans = data.keyphrases.map((k) => [k.start, k.end]).sort((a, b) => a[0] - b[0]);
  const parts = [];
  let at = 0;
  for (const [start, end] of spans) {
    if (start < at) continue;
    parts.push(points.slice(at, start).join(""));
    const mark = document.createElement("mark");
    mark.textContent = points.slice(start, end).join("");
    parts.push(mark);
    at = end;
  }
  parts.push(points.slice(at).join(""));
  $("keyphrase-marked").replaceChildren(...parts);
}));

// Palette: colours with their shares, and the server's swatch; a new number of colours asks again.
$("palette-n").addEventListener("change", () => {
  if ($("palette-file").files.length) $("palette-file").dispatchEvent(new Event("change"));
});
$("palette-file").addEventListener("change", () => run("palette", async () => {
  const n = $("palette-n").value;
  const data = await call(`/v1/palette/extract?n_colors=${encodeURIComponent(n)}`, form("image", $("palette-file").files));
  $("palette-colours").replaceChildren(...data.colors.map((c) => {
    const li = document.createElement("li");
    const chip = document.createElement("div");
    chip.className = "chip";
    chip.style.background = c.hex;
    li.append(chip, `${c.hex} · ${(100 * c.share).toFixed(1)} %`);
    return li;
  }));
  $("palette-swatch").src = "data:image/png;base64," + data.swatch_png;
  $("palette-swatch").hidden = false;
}));

// Each listed task's model, from GET /v1/<task>/models: ready, building (with its progress), loading, waiting or
// failed (with the reason), on its panel and its tab; the panel's inputs wait until a model serves. Asked again
// every few seconds until ready, then now and then (a newer version may land).
const STATES = { ready: "Ready", building: "Building", loading: "Loading", waiting: "Waiting for a model", failed: "Failed" };

async function watchModel(name) {
  const panel = $(name);
  if (!panel) return;
  let line = panel.querySelector(".model-state");
  if (!line) {
    line = document.createElement("p");
    line.className = "model-state";
    line.setAttribute("role", "status");
    panel.querySelector("h2").after(line);
  }
  const headers = $("api-key").value ? { "X-API-Key": $("api-key").value } : {};
  let state = "unknown";
  let text;
  try {
    const response = await fetch(`/v1/${name}/models`, { headers });
    const data = await response.json().catch(() => ({}));
    if (response.status === 401) {
      $("key-row").hidden = false;
      text = "Enter the API key above to see this model's state.";
    } else if (!response.ok) {
      text = data.error || `The server answered ${response.status}.`;
    } else {
      state = data.state;
      text = `${STATES[state] || state}: ${data.detail}`;
    }
  } catch (e) {
    text = "Could not reach the server to ask about this model.";
  }
  panel.dataset.model = state;
  line.textContent = text;
  const tab = document.querySelector(`nav button[data-panel="${name}"]`);
  if (tab) tab.dataset.model = state;
  const waiting = state !== "ready" && state !== "unknown";
  for (const el of panel.querySelectorAll("input, button, textarea")) el.disabled = waiting;
  setTimeout(() => watchModel(name), state === "ready" ? 60000 : 3000);
}

// Panels of the tasks the server lists (image classifiers are configuration: their panels come from here), then
// the tabs and drop zones of every panel. Later tabs come in reverse, so the listed order is kept.
async function setUp() {
  try {
    const listed = await (await fetch("/tasks.json")).json();
    for (const task of listed.tasks.filter((t) => t.kind === "image-classification").reverse()) classifierPanel(task);
    for (const task of listed.tasks) watchModel(task.name);
  } catch (e) {
    $("status").textContent = "Could not list the server's tasks: " + e.message;
  }
  for (const tab of document.querySelectorAll("nav button")) tab.addEventListener("click", () => showPanel(tab.dataset.panel));
  for (const zone of document.querySelectorAll(".drop")) dropZone(zone);
  document.body.dataset.ready = "true";
}
setUp();
