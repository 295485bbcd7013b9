// The page: pick or drop songs, or paste a link, one job each; follow the jobs (kept in this
// browser's localStorage, so a job still running when the tab closed is followed again; where
// the gateway has keys on, the key's jobs as the server lists them); open a finished one in
// the player. Plain modules, no build step, nothing loaded from elsewhere.

import { POLL_MS, audio, closePlayer, holds, listenable, openJob, sleep, state } from "./listen.js";
import { chainText, ensembleHow, loadModels, membersText, modelFields, stemFields } from "./models.js";
import { fmtTime } from "./views.js";
import { encodeWav } from "./wav.js";
import { el } from "./dom.js";
import { apiFetch, askForKey, auth, errorMessage, keyXhr, setUpKeyForm, tryKey } from "./auth.js";
import { keptJobs } from "./offline.js";

const HISTORY_KEY = "audiosplit.jobs";
const HISTORY_MAX = 50;
const LINK = /^https?:\/\/\S+$/i;
const $ = (id) => document.getElementById(id);
state.cards = {};

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
  if (auth.on) return; // the server keeps the key's jobs
  const list = history().filter((h) => h.id !== job.id);
  list.unshift({ id: job.id, filename: job.filename, created: job.created_at || new Date().toISOString() });
  saveHistory(list);
}

function forget(id) {
  saveHistory(history().filter((h) => h.id !== id));
}

// ---- the form ---------------------------------------------------------------------------

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
    const link = $("link").value.trim();
    $("form-error").textContent = files.length || link ? "" : "Choose a song first (or drop one on the box, or paste a link).";
    if (!files.length && !link) return;
    if (link && !LINK.test(link)) {
      $("form-error").textContent = "The link must start with http:// or https://.";
      return;
    }
    let models;
    try {
      models = modelFields();
    } catch (err) {
      $("form-error").textContent = err.message;
      return;
    }
    const fields = {
      ...models, ...stemFields(), quality: $("quality").value,
      analysis: $("analysis").checked ? "true" : "false",
    };
    if (fields.recipe && fields.model === "auto") delete fields.model; // the recipe's own
    for (const f of files) upload(f, fields);
    if (link) sendLink(link, fields);
    input.value = "";
    $("link").value = "";
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
    notice: el("p", { class: "notice", role: "note", hidden: true }),
    alert: el("p", { class: "error", role: "alert" }),
    actions: el("p", { class: "actions" }),
  };
  c.li.append(el("p", { class: "job-head" }, c.title, " ", c.when), c.status, c.bar, c.notice, c.info, c.alert, c.actions);
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

/** The server's sentence as text nodes, its `backticked` names (a model, a command) as code. */
function withCode(text) {
  return text.split("`").map((part, i) => (i % 2 ? el("code", { text: part }) : part));
}

// The job's stage while its model's weights download on first use (prediction/download.py),
// and while the gateway fetches a link's song (gateway/fetching.py).
const DOWNLOADING = /^downloading model \(([\d.]+) of ([\d.]+) MB\)$/;
const FETCHING = /^fetching(?: \(([\d.]+)(?: of ([\d.]+))? MB.*\))?$/;

function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" })[n % 10] || "th";
  return `${n}${suffix}`;
}

function queuedText(job, left) {
  if (job.queue_position == null) return "Waiting for its turn…";
  return `Queued, ${ordinal(job.queue_position)} in line${left ? ` — ${left}` : ""}`;
}

function showJob(c, job) {
  c.job = job;
  c.li.dataset.jobId = job.id;
  c.li.dataset.status = job.status;
  c.title.textContent = job.title || job.filename || c.filename;
  const pct = Math.round((job.progress || 0) * 100);
  const left = fmtEta(eta(c, job));
  const dl = job.status === "running" ? DOWNLOADING.exec(job.stage || "") : null;
  const fetching = job.status === "queued" || job.status === "running" ? FETCHING.exec(job.stage || "") : null;
  const texts = {
    queued: queuedText(job, left),
    running: dl ? `Downloading the model's weights (first use only): ${dl[1]} of ${dl[2]} MB` : `${job.stage} — ${pct}%${left ? `, ${left}` : ""}${job.ready_s > 0 ? `; ready to ${fmtTime(job.ready_s, 0)} of ${fmtTime(job.duration_s, 0)}` : ""}`,
    done: `Done: ${(job.stems || []).join(", ")} (${fmtTime(job.duration_s)})`,
    failed: "Failed",
    cancelled: "Cancelled",
  };
  const text = fetching ? job.stage : texts[job.status] || job.status;
  c.status.textContent = `${text}${job.model ? ` · model ${job.model}` : ""}`;
  const [done, total] = dl ? [dl[1], dl[2]] : fetching?.[2] ? [fetching[1], fetching[2]] : [0, 0];
  c.bar.value = job.status === "done" ? 1 : Number(total) > 0 ? Number(done) / Number(total) : job.progress || 0;
  c.bar.hidden = job.status === "done" || job.status === "failed" || job.status === "cancelled";
  const notes = (job.notes || []).map((n) => el("li", { class: "note", text: `ℹ ${n}` }));
  // What the job's stems are worth, when it says (the dsp separator ran): once, on its card.
  c.notice.replaceChildren(...withCode(job.notice || ""));
  c.notice.hidden = !job.notice;
  const warns = (job.warnings || []).filter((w) => w !== job.notice).map((w) => el("li", { class: "warn", text: `⚠ ${w}` }));
  const members = membersText(job);
  const how = ensembleHow(job) === "median" ? " (weighted median)" : "";
  const ensemble = members ? [el("li", { class: "members", text: `Ensemble${how}: ${members}` })] : [];
  const chained = chainText(job);
  const chain = chained ? [el("li", { class: "chain", text: `Separated again: ${chained}` })] : [];
  c.info.replaceChildren(...ensemble, ...chain, ...notes, ...warns);
  c.alert.textContent = job.status === "failed" ? `${c.title.textContent} failed: ${job.error?.message || "unknown error"}` : "";
  const actions = [];
  if (job.status === "done") actions.push(button("Open", `Open ${c.title.textContent} in the player`, () => openJob(job.id, { reveal: true }), "open"));
  const here = state.job?.id === job.id;
  if (listenable(job) && !here) {
    actions.push(button("Listen now", `Listen to ${c.title.textContent} while it separates`, () => openJob(job.id, { autoplay: true, reveal: true }), "open"));
  }
  if (job.links?.cancel) actions.push(button("Cancel", `Cancel ${c.title.textContent}`, () => cancelJob(c)));
  actions.push(button("Delete", `Delete ${c.title.textContent} from the server`, () => deleteJob(c)));
  c.actions.replaceChildren(...actions);
}

async function cancelJob(c) {
  const r = await apiFetch(c.job.links.cancel, { method: "POST" }).catch(() => null);
  if (r?.ok) {
    showJob(c, await r.json());
    // also while the player is still loading it (it opened by itself as the job started):
    // else it would go on to hold a cancelled job, and the next upload would not open
    if (holds(c.job.id)) closePlayer();
    return;
  }
  c.alert.textContent = `Could not cancel ${c.title.textContent}: ${r ? await errorMessage(r) : "server unreachable"}`;
}

async function deleteJob(c) {
  const id = c.job?.id;
  if (!id) return removeCard(c);
  const r = await apiFetch(`/api/jobs/${id}`, { method: "DELETE" }).catch(() => null);
  if (!r || (!r.ok && r.status !== 404)) {
    c.alert.textContent = `Could not delete ${c.title.textContent}: ${r ? `HTTP ${r.status}` : "server unreachable"}`;
    return;
  }
  forget(id);
  removeCard(c);
  if (holds(id)) closePlayer();
}

/** Polls a job until it ends: done, failed or cancelled (network errors: retried, the job is
 *  not lost; a refused key: the key's form shows, and the cards go). */
async function follow(c, id, autoOpen) {
  for (;;) {
    let r;
    try {
      r = await apiFetch(`/api/jobs/${id}`);
    } catch {
      c.status.textContent = "The server cannot be reached; retrying…";
      await sleep(3 * POLL_MS);
      continue;
    }
    if (!state.cards[c.key] || r.status === 401) return;
    if (r.status === 404) {
      c.status.textContent = "This job is no longer on the server.";
      c.bar.hidden = true;
      c.actions.replaceChildren(button("Remove", "Remove it from this list", () => { forget(id); removeCard(c); }));
      return;
    }
    const job = await r.json();
    showJob(c, job);
    // The first job of an upload opens by itself: as soon as its first seconds are final.
    const free = autoOpen && !state.job && !state.loading;
    if (free && listenable(job)) openJob(job.id, { autoplay: true });
    if (job.status === "done") {
      if (free) openJob(job.id);
      return;
    }
    if (job.status === "failed" || job.status === "cancelled") return;
    await sleep(POLL_MS);
  }
}

function upload(file, fields) {
  const c = card(`upload-${Math.random().toString(36).slice(2)}`, file.name, new Date().toISOString());
  c.status.textContent = "Uploading…";
  const fd = new FormData();
  fd.append("file", file);
  for (const [k, v] of Object.entries(fields)) fd.append(k, v);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/jobs");
  keyXhr(xhr);
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
      accepted(c, body);
      return;
    }
    const message = body.error?.message || `HTTP ${xhr.status} ${xhr.statusText}`;
    if (xhr.status === 401) askForKey(message);
    else refused(c, message);
  };
  xhr.onerror = () => refused(c, "the server could not be reached.");
  xhr.send(fd);
}

function accepted(c, job) {
  remember(job);
  showJob(c, job);
  follow(c, job.id, true);
}

/** A link's song: the server checks the link now and fetches the song in the job. */
async function sendLink(link, fields) {
  const c = card(`link-${Math.random().toString(36).slice(2)}`, link, new Date().toISOString());
  c.status.textContent = "Sending the link…";
  c.bar.removeAttribute("value");
  const fd = new FormData();
  fd.append("url", link);
  for (const [k, v] of Object.entries(fields)) fd.append(k, v);
  let r;
  try {
    r = await apiFetch("/api/jobs", { method: "POST", body: fd });
  } catch {
    return refused(c, "the server could not be reached.");
  }
  if (r.status === 202) return accepted(c, await r.json());
  if (r.status !== 401) refused(c, await errorMessage(r));
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

/** Without a network: the jobs kept for offline that the history lacks (with keys on, all of
 *  them: the key's list is on the server). Each card reads its job from the offline copy. */
async function restoreKept() {
  const shown = new Set(Object.values(state.cards).map((c) => c.job?.id));
  for (const id of await keptJobs()) {
    if (shown.has(id)) continue;
    const c = card(id, "a job kept for offline", null);
    c.job = { id };
    c.status.textContent = "Checking…";
    follow(c, id, false);
  }
}

// Hooks for tests and the curious (the browser console).
window.audiosplit = {
  state,
  get ctx() { return audio.ctx; },
  get player() { return audio.player; },
  get view() { return audio.view; },
  get buffers() { return audio.player ? Object.fromEntries(audio.player.stems.map((s) => [s.name, s.buffer])) : {}; },
  position: () => audio.player?.position() ?? 0,
  renderMix: (opts) => audio.player.renderMix(opts),
  openJob,
  encodeWav,
  history,
};

// ---- the key (where the gateway has keys on) ------------------------------------------------

function clearCards() {
  for (const c of Object.values(state.cards)) removeCard(c);
  closePlayer();
}

/** The page for a key that works: its jobs as the server lists them, its use today. */
async function enterWith(jobs) {
  $("jobs-help").textContent = "The jobs of this key, kept on the server. A job keeps running when you close the tab.";
  clearCards();
  for (const job of [...jobs].reverse()) {
    const c = card(job.id, job.title || job.filename, job.created_at);
    showJob(c, job);
    if (job.status === "queued" || job.status === "running") follow(c, job.id, false);
  }
  $("jobs-empty").hidden = jobs.length > 0;
  loadModelsOnce();
  const r = await apiFetch("/api/usage").catch(() => null);
  const use = r?.ok ? await r.json() : null;
  const left = use?.minutes_left != null ? ` (${use.minutes_left} of ${use.minutes_per_day} min left today)` : "";
  $("key-who").textContent = use ? `Using the key of ${use.tenant}${left}` : "Using a key";
}

let modelsLoaded = false;
function loadModelsOnce() {
  if (!modelsLoaded) loadModels();
  modelsLoaded = true;
}

/** Whether the gateway needs a key: a 401 to a request without one says so. */
async function start() {
  setUpForm();
  setUpKeyForm({ leave: clearCards, enter: enterWith });
  // The service worker keeps the page, and the jobs kept for offline, for use without a network.
  navigator.serviceWorker?.register("/sw.js").catch(() => {});
  const r = await fetch("/api/jobs?limit=1").catch(() => null);
  if (r?.status !== 401) {
    loadModelsOnce();
    restoreHistory();
    if (!r) restoreKept();
    return;
  }
  auth.on = true;
  if (auth.key) await tryKey(auth.key);
  else askForKey("");
}

start();
