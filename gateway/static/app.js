// The page: pick or drop songs, one job each; follow the jobs (kept in this browser's
// localStorage, so a job still running when the tab closed is followed again); open a finished
// one in the player. Plain modules, no build step, nothing loaded from elsewhere.

import { MixerView } from "./mixer.js";
import { Player } from "./player.js";
import { fmtTime } from "./views.js";
import { encodeWav } from "./wav.js";
import { el } from "./dom.js";

const SAMPLE_RATE = 44100; // the service's rate: decoding at it keeps every stem's exact length
const HISTORY_KEY = "audiosplit.jobs";
const HISTORY_MAX = 50;
const POLL_MS = 1000;
const STEM_FETCHES = 2; // stems fetched and decoded at once: bounds memory on long songs
// What each model is, in a line (GET /api/models says whether its weights are here).
const MODEL_NOTES = {
  htdemucs: "Hybrid Transformer Demucs v4: the best all-round 4-stem model.",
  htdemucs_ft: "htdemucs fine-tuned per stem (a bag of four): a little better, four times the work.",
  htdemucs_6s: "htdemucs with six stems: adds guitar and piano (piano is weak).",
  hdemucs_mmi: "Hybrid Demucs v3 trained on extra data: good, older.",
  mdx_extra: "Demucs v2 of the MDX challenge, trained on extra data.",
  umxhq: "Open-Unmix trained on MUSDB18-HQ: light and fast, below Demucs.",
  umxl: "Open-Unmix large, trained on extra data: the best Open-Unmix.",
  umx: "Open-Unmix trained on MUSDB18 (band-limited to 16 kHz).",
  dsp: "Classical signal processing, no weights needed: always there, far below the neural models.",
};

const $ = (id) => document.getElementById(id);
// timings: milliseconds of the last open (stems fetched and decoded, player built), for bench/.
// stemFormat: what the player fetches; float WAV decodes to exactly the job's length (bench/
// bench_page.py compares others).
const state = {
  job: null, analysis: null, ready: false, loading: false, error: null, cards: {}, timings: {},
  stemFormat: "wav",
};
let ctx = null;
let player = null;
let view = null;
let openSeq = 0;

// ---- history (localStorage) -------------------------------------------------------------

function history() {
  try {
    const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(list) ? list.filter((h) => h && typeof h.id === "string") : [];
  } catch {
    return [];
  }
}

function saveHistory(list) {
  try {
    localStorage.setItem(HISTORY_KEY, JSON.stringify(list.slice(0, HISTORY_MAX)));
  } catch {
    // storage full or disabled: the jobs still run, they are just not remembered
  }
}

function remember(job) {
  const list = history().filter((h) => h.id !== job.id);
  list.unshift({ id: job.id, filename: job.filename, created: job.created_at || new Date().toISOString() });
  saveHistory(list);
}

function forget(id) {
  saveHistory(history().filter((h) => h.id !== id));
}

// ---- models and the form ----------------------------------------------------------------

async function loadModels() {
  const list = $("model-list");
  try {
    const r = await fetch("/api/models");
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const models = (await r.json()).models || [];
    list.replaceChildren();
    const status = (m) => (m.available ? "weights here" : m.fetchable ? "downloaded on first use" : "not installed");
    for (const m of models) {
      const note = MODEL_NOTES[m.name] || `${m.family} model.`;
      const usable = m.available || m.fetchable;
      const card = m.card || {};
      const facts = [card.published_sdr && `Published SDR: ${card.published_sdr}.`, card.licence && `Weights licence: ${card.licence}.`]
        .filter(Boolean).join(" ");
      $("model").append(el("option", {
        value: m.name, disabled: !usable,
        text: `${m.name}${m.available ? "" : ` — ${status(m)}`}`, title: m.reason,
      }));
      list.append(el("li", { class: usable ? "ok" : "missing" },
        el("b", { text: m.name }), ` — ${status(m)}. ${note} Stems: ${m.stems.join(", ")}. ${facts}`,
        m.available ? "" : el("small", { text: ` ${m.reason}` })));
    }
    const here = models.filter((m) => m.available || m.fetchable).map((m) => m.name);
    const autoHelp = `Which separator runs. Usable here: ${here.join(", ") || "none"}; auto picks the best of them.`;
    const byName = Object.fromEntries(models.map((m) => [m.name, m]));
    const explain = () => {
      const m = byName[$("model").value];
      $("model-help").textContent = m ? `${MODEL_NOTES[m.name] || m.family} ${m.available ? "Weights here." : m.fetchable ? "Downloaded on first use (the job says so while it downloads)." : m.reason}` : autoHelp;
    };
    $("model").addEventListener("change", explain);
    explain();
  } catch (e) {
    list.replaceChildren(el("li", { text: `Could not list the models (${e.message}); auto still works.` }));
  }
}

function pickedFiles(files) {
  $("picked").textContent = files.length ? `${files.length} file${files.length > 1 ? "s" : ""}: ${[...files].map((f) => f.name).join(", ")}` : "";
}

function setUpForm() {
  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => pickedFiles(input.files));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer?.files?.length) {
      input.files = e.dataTransfer.files;
      pickedFiles(input.files);
    }
  });
  $("form").addEventListener("submit", (e) => {
    e.preventDefault();
    const files = [...input.files];
    $("form-error").textContent = files.length ? "" : "Choose a song first (or drop one on the box).";
    if (!files.length) return;
    const fields = {
      model: $("model").value, quality: $("quality").value, stems: $("stems").value,
      analysis: $("analysis").checked ? "true" : "false",
    };
    for (const f of files) upload(f, fields);
    input.value = "";
    pickedFiles([]);
  });
}

// ---- job cards --------------------------------------------------------------------------

/** A card in "Your jobs": created for an upload (key: a temporary id) or a remembered job. */
function card(key, filename, created) {
  const c = {
    key, filename,
    li: el("li", { class: "job" }),
    title: el("span", { class: "job-title", text: filename || "song" }),
    when: el("small", { text: created ? new Date(created).toLocaleString() : "" }),
    status: el("p", { class: "job-status", "aria-live": "polite" }),
    bar: el("progress", { max: "1", value: "0", "aria-label": `Progress of ${filename}` }),
    info: el("ul", { class: "notes" }),
    alert: el("p", { class: "error", role: "alert" }),
    actions: el("p", { class: "actions" }),
  };
  c.li.append(el("p", { class: "job-head" }, c.title, " ", c.when), c.status, c.bar, c.info, c.alert, c.actions);
  $("jobs").prepend(c.li);
  $("jobs-empty").hidden = true;
  state.cards[key] = c;
  return c;
}

function removeCard(c) {
  c.li.remove();
  delete state.cards[c.key];
  $("jobs-empty").hidden = $("jobs").children.length > 0;
}

function button(text, label, onclick, cls = "secondary") {
  const b = el("button", { type: "button", class: cls, "aria-label": label, text });
  b.onclick = onclick;
  return b;
}

function fmtEta(s) {
  if (s == null || !Number.isFinite(s)) return "";
  if (s < 60) return `about ${Math.max(1, Math.round(s))} s left`;
  return `about ${Math.floor(s / 60)} min ${Math.round(s % 60)} s left`;
}

/** The job's own ETA when the server gives one; else one from the progress rate seen here. */
function eta(c, job) {
  if (job.eta_s != null) return job.eta_s;
  if (job.status !== "running" || !(job.progress > 0.05)) return null;
  c.firstSeen ??= { t: performance.now(), p: job.progress };
  const dt = (performance.now() - c.firstSeen.t) / 1000;
  const dp = job.progress - c.firstSeen.p;
  return dt > 2 && dp > 0 ? (dt / dp) * (1 - job.progress) : null;
}

function showJob(c, job) {
  c.job = job;
  c.li.dataset.jobId = job.id;
  c.li.dataset.status = job.status;
  c.title.textContent = job.filename || c.filename;
  const pct = Math.round((job.progress || 0) * 100);
  const left = fmtEta(eta(c, job));
  const texts = {
    queued: "Waiting for its turn…",
    running: `${job.stage} — ${pct}%${left ? `, ${left}` : ""}`,
    done: `Done: ${(job.stems || []).join(", ")} (${fmtTime(job.duration_s)})`,
    failed: "Failed",
  };
  c.status.textContent = `${texts[job.status] || job.status}${job.model ? ` · model ${job.model}` : ""}`;
  c.bar.value = job.status === "done" ? 1 : job.progress || 0;
  c.bar.hidden = job.status === "done" || job.status === "failed";
  const notes = (job.notes || []).map((n) => el("li", { class: "note", text: `ℹ ${n}` }));
  const warns = (job.warnings || []).map((w) => el("li", { class: "warn", text: `⚠ ${w}` }));
  c.info.replaceChildren(...notes, ...warns);
  c.alert.textContent = job.status === "failed" ? `${c.title.textContent} failed: ${job.error?.message || "unknown error"}` : "";
  const actions = [];
  if (job.status === "done") actions.push(button("Open", `Open ${c.title.textContent} in the player`, () => openJob(job.id), "open"));
  actions.push(button("Delete", `Delete ${c.title.textContent} from the server`, () => deleteJob(c)));
  c.actions.replaceChildren(...actions);
}

async function deleteJob(c) {
  const id = c.job?.id;
  if (!id) return removeCard(c);
  const r = await fetch(`/api/jobs/${id}`, { method: "DELETE" }).catch(() => null);
  if (!r || (!r.ok && r.status !== 404)) {
    c.alert.textContent = `Could not delete ${c.title.textContent}: ${r ? `HTTP ${r.status}` : "server unreachable"}`;
    return;
  }
  forget(id);
  removeCard(c);
  if (state.job?.id === id) closePlayer();
}

/** Polls a job until it is done or failed (network errors: retried, the job is not lost). */
async function follow(c, id, autoOpen) {
  for (;;) {
    let r;
    try {
      r = await fetch(`/api/jobs/${id}`);
    } catch {
      c.status.textContent = "The server cannot be reached; retrying…";
      await sleep(3 * POLL_MS);
      continue;
    }
    if (r.status === 404) {
      c.status.textContent = "This job is no longer on the server.";
      c.bar.hidden = true;
      c.actions.replaceChildren(button("Remove", "Remove it from this list", () => { forget(id); removeCard(c); }));
      return;
    }
    if (!state.cards[c.key]) return; // deleted meanwhile
    const job = await r.json();
    showJob(c, job);
    if (job.status === "done") {
      if (autoOpen && !state.job && !state.loading) openJob(job.id);
      return;
    }
    if (job.status === "failed") return;
    await sleep(POLL_MS);
  }
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

function upload(file, fields) {
  const c = card(`upload-${Math.random().toString(36).slice(2)}`, file.name, new Date().toISOString());
  c.status.textContent = "Uploading…";
  const fd = new FormData();
  fd.append("file", file);
  for (const [k, v] of Object.entries(fields)) fd.append(k, v);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/jobs");
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    c.bar.value = e.loaded / e.total;
    c.status.textContent = `Uploading — ${Math.round((100 * e.loaded) / e.total)}% of ${(e.total / 1e6).toFixed(1)} MB`;
  };
  xhr.upload.onload = () => {
    c.bar.removeAttribute("value"); // indeterminate while the server decodes
    c.status.textContent = "Uploaded; the server is decoding it…";
  };
  xhr.onload = () => {
    let body = {};
    try {
      body = JSON.parse(xhr.responseText);
    } catch {
      // not JSON: a proxy's error page
    }
    if (xhr.status === 202 && body.id) {
      remember(body);
      showJob(c, body);
      follow(c, body.id, true);
      return;
    }
    refused(c, body.error?.message || `HTTP ${xhr.status} ${xhr.statusText}`);
  };
  xhr.onerror = () => refused(c, "the server could not be reached.");
  xhr.send(fd);
}

function refused(c, message) {
  c.bar.hidden = true;
  c.status.textContent = "Not accepted.";
  c.alert.textContent = `${c.filename} was refused: ${message}`;
  c.actions.replaceChildren(button("Dismiss", `Dismiss the message about ${c.filename}`, () => removeCard(c)));
}

function restoreHistory() {
  const list = history();
  for (const h of [...list].reverse()) {
    const c = card(h.id, h.filename, h.created);
    c.job = { id: h.id };
    c.status.textContent = "Checking…";
    follow(c, h.id, false);
  }
  $("jobs-empty").hidden = list.length > 0;
}

// ---- the player -------------------------------------------------------------------------

function closePlayer() {
  openSeq++;
  view?.dispose();
  view = null;
  player = null;
  Object.assign(state, { job: null, analysis: null, ready: false, loading: false, error: null });
  $("player").hidden = true;
}

/** One stem as an AudioBuffer; adds its fetch and decode times to `timings`. */
async function fetchStem(url, timings) {
  const t0 = performance.now();
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  const bytes = await r.arrayBuffer();
  const t1 = performance.now();
  const buffer = await ctx.decodeAudioData(bytes);
  timings.fetch_ms += t1 - t0;
  timings.decode_ms += performance.now() - t1;
  return buffer;
}

async function openJob(id) {
  closePlayer();
  const seq = openSeq;
  state.loading = true;
  $("player").hidden = false;
  $("player-body").hidden = true;
  $("track-info").textContent = "";
  const status = $("player-status");
  status.textContent = "Loading the stems…";
  const t0 = performance.now();
  const timings = { fetch_ms: 0, decode_ms: 0 };
  try {
    const job = await (await fetch(`/api/jobs/${id}`)).json();
    if (job.status !== "done") throw new Error(`the job is ${job.status}`);
    state.job = job;
    $("player-title").textContent = `${job.filename} — ${job.stems.length} stems by ${job.model}, ${fmtTime(job.duration_s)}`;
    // One context at the service's rate: decodeAudioData resamples to the context's rate, and
    // 44.1 kHz keeps each stem's length exact. Its clock is the transport's clock.
    ctx ??= new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: "playback" });
    const buffers = new Array(job.stems.length);
    let next = 0;
    let loaded = 0;
    const worker = async () => {
      while (next < job.stems.length) {
        const i = next++;
        const url = `${job.links.stems[job.stems[i]]}?format=${state.stemFormat}`;
        buffers[i] = await fetchStem(url, timings);
        if (seq !== openSeq) return;
        status.textContent = `Loaded ${++loaded} of ${job.stems.length} stems…`;
      }
    };
    const analysisPromise = loadAnalysis(job);
    await Promise.all(Array.from({ length: STEM_FETCHES }, worker));
    const { analysis, note } = await analysisPromise;
    if (seq !== openSeq) return;
    const t1 = performance.now();
    state.analysis = analysis;
    player = new Player(ctx, job.stems.map((name, i) => ({ name, buffer: buffers[i] })));
    view = new MixerView(player, job, analysis, note);
    $("player-body").hidden = false;
    state.timings = { ...timings, load_ms: t1 - t0, build_ms: performance.now() - t1 };
    status.textContent = "Ready. Press Space or ▶ to play.";
    state.ready = true;
  } catch (e) {
    if (seq !== openSeq) return;
    state.error = e.message;
    status.textContent = `Could not open the job: ${e.message}`;
  } finally {
    if (seq === openSeq) state.loading = false;
  }
}

async function loadAnalysis(job) {
  if (!job.links.analysis) return { analysis: null, note: "No analysis: the job ran with analysis off." };
  try {
    const r = await fetch(job.links.analysis);
    if (r.ok) return { analysis: await r.json(), note: "" };
    const body = await r.json().catch(() => ({}));
    return { analysis: null, note: `No analysis: ${body.error?.message || `HTTP ${r.status}`}` };
  } catch (e) {
    return { analysis: null, note: `No analysis: ${e.message}` };
  }
}

// Hooks for tests and the curious (the browser console).
window.audiosplit = {
  state,
  get ctx() { return ctx; },
  get player() { return player; },
  get view() { return view; },
  get buffers() { return player ? Object.fromEntries(player.stems.map((s) => [s.name, s.buffer])) : {}; },
  position: () => player?.position() ?? 0,
  renderMix: (opts) => player.renderMix(opts),
  openJob,
  encodeWav,
  history,
};

setUpForm();
loadModels();
restoreHistory();
