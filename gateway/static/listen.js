// Opening a job in the player: a finished one from its stem files; a running one as soon as its
// first seconds are final, growing the buffers as the rest arrives (the player plays on across
// the joins), until it holds exactly the finished stems.

import { MixerView } from "./mixer.js";
import { Player } from "./player.js";
import { PracticeControls } from "./practice.js";
import { LiveStems, fetchStem } from "./stems.js";
import { chainText, ensembleHow, membersText } from "./models.js";
import { fmtTime } from "./views.js";
import { apiFetch } from "./auth.js";

const SAMPLE_RATE = 44100; // the service's rate: decoding at it keeps every stem's exact length
const STEM_FETCHES = 2; // stems fetched and decoded at once: bounds memory on long songs
export const POLL_MS = 1000;

const $ = (id) => document.getElementById(id);
export const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// ready: the player holds the finished stems; playable: it can play (perhaps a prefix so far).
// live: while a running job is followed here: {status, ready_s, pieces, heard, joined}; heard
// says what the job was when playback was first heard moving, joined whether it played on past
// that point while the job still ran. timings: milliseconds of the last open
// (stems fetched and decoded, player built), for bench/. stemFormat: what the player fetches;
// float WAV decodes to exactly the job's length (bench/bench_page.py compares others).
export const state = {
  job: null, analysis: null, ready: false, playable: false, loading: false, error: null, live: null,
  timings: {}, stemFormat: "wav",
};
export const audio = { ctx: null, player: null, view: null };
let openSeq = 0;
let opening = null; // the id of the job openJob is loading, until it shows or fails

/** The job is running and its first seconds can be played. */
export function listenable(job) {
  return job.status === "running" && job.ready_s > 0 && Boolean(job.links?.stems);
}

/** The player shows job `id`, or is loading it: cancelling or deleting the job closes it. */
export function holds(id) {
  return state.job?.id === id || opening === id;
}

export function closePlayer() {
  openSeq++;
  opening = null;
  audio.practice?.dispose();
  audio.view?.dispose();
  audio.view = null;
  audio.player = null;
  Object.assign(state, { job: null, analysis: null, ready: false, playable: false, loading: false, error: null, live: null });
  $("player").hidden = true;
}

async function getJob(id) {
  const r = await apiFetch(`/api/jobs/${id}`);
  if (!r.ok) throw new Error(r.status === 404 ? "the job is no longer on the server" : `HTTP ${r.status}`);
  return r.json();
}

function title(job) {
  const members = membersText(job);
  const by = members ? `the weighted ${ensembleHow(job)} of ${members}` : job.model;
  const chained = chainText(job);
  const again = chained ? ` (then ${chained})` : "";
  return `${job.filename} — ${job.stems.length} stems by ${by}${again}, ${fmtTime(job.duration_s)}`;
}

/** Brings the player to the top of the view and gives it the focus, so that Space plays
 *  (not the button that opened it, which would open the job again). */
function revealPlayer() {
  const player = $("player");
  player.scrollIntoView({ block: "start" });
  player.focus({ preventScroll: true });
}

/**
 * Opens job `id`. autoplay: start playing at once (a running job the page follows); reveal:
 * scroll the player into view and focus it (a person asked for it: the Open button).
 */
export async function openJob(id, { autoplay = false, reveal = false } = {}) {
  closePlayer();
  const seq = openSeq;
  state.loading = true;
  opening = id;
  $("player").hidden = false;
  $("player-body").hidden = true;
  $("track-info").textContent = "";
  const status = $("player-status");
  status.textContent = "Loading the stems…";
  if (reveal) revealPlayer();
  try {
    const job = await getJob(id);
    if (seq !== openSeq) return;
    // One context at the service's rate: decodeAudioData resamples to the context's rate, and
    // 44.1 kHz keeps each stem's length exact. Its clock is the transport's clock.
    audio.ctx ??= new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: "playback" });
    if (job.status === "done") await openDone(job, seq);
    else if (listenable(job)) await openLive(job, seq, autoplay);
    else if (job.status === "failed") throw new Error(`the job failed: ${job.error?.message || "unknown error"}`);
    else throw new Error(`the job is ${job.status} and none of it is final yet`);
    // Again now that the player is its full height: at first it was a line, which a short
    // page may not have been able to scroll to the top.
    if (reveal && seq === openSeq) revealPlayer();
  } catch (e) {
    if (seq !== openSeq) return;
    state.error = e.message;
    status.textContent = `Could not open the job: ${e.message}`;
  } finally {
    if (seq === openSeq) {
      state.loading = false;
      opening = null;
    }
  }
}

async function openDone(job, seq) {
  const status = $("player-status");
  const t0 = performance.now();
  const timings = { fetch_ms: 0, decode_ms: 0 };
  state.job = job;
  $("player-title").textContent = title(job);
  const buffers = new Array(job.stems.length);
  let next = 0;
  let loaded = 0;
  const worker = async () => {
    while (next < job.stems.length) {
      const i = next++;
      const url = `${job.links.stems[job.stems[i]]}?format=${state.stemFormat}`;
      buffers[i] = await fetchStem(audio.ctx, url, timings);
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
  audio.player = new Player(audio.ctx, job.stems.map((name, i) => ({ name, buffer: buffers[i] })));
  audio.view = new MixerView(audio.player, job, analysis, note);
  audio.practice = new PracticeControls(audio.player, analysis);
  $("player-body").hidden = false;
  state.timings = { ...timings, load_ms: t1 - t0, build_ms: performance.now() - t1 };
  state.ready = state.playable = true;
}

async function openLive(job, seq, autoplay) {
  const live = new LiveStems(audio.ctx, job);
  await live.grow(job);
  if (seq !== openSeq) return;
  state.job = job;
  state.live = { status: job.status, ready_s: live.readyFrames / SAMPLE_RATE, pieces: live.pieces, heard: null, joined: false };
  $("player-title").textContent = title(job);
  const player = new Player(audio.ctx, live.stems(), undefined, live.readyFrames / SAMPLE_RATE);
  audio.player = player;
  audio.view = new MixerView(player, job, null, "The analysis is shown when the job is done.", { live: true });
  audio.practice = new PracticeControls(player, null);
  $("player-body").hidden = false;
  state.playable = true;
  // Not awaited: where the browser holds the audio back until a key or click, play() waits
  // for that, and the job is followed meanwhile. The status line says which it is.
  if (autoplay) player.play().catch(() => {});
  followLive(live, seq);
}

/** Polls the running job; fetches each new piece into the player, then the finished state. */
async function followLive(live, seq) {
  const player = audio.player;
  const view = audio.view;
  let job = live.job;
  let unreachable = false;
  for (;;) {
    await sleep(POLL_MS);
    if (seq !== openSeq) return;
    try {
      job = await getJob(job.id);
      if (seq !== openSeq) return;
      if (job.status === "failed") throw new Error(`the job failed: ${job.error?.message || "unknown error"}`);
      // Cancelled elsewhere (another tab, the API): its files are gone, and a player left
      // holding it would keep the next upload from opening by itself.
      if (job.status === "cancelled") return closePlayer();
      const grew = await live.grow(job);
      if (seq !== openSeq) return;
      if (unreachable) view.say("");
      unreachable = false;
      const heardNow = player.playing && !player.waiting && player.position() > 0;
      if (heardNow && !state.live.heard) state.live.heard = { status: job.status, position: player.position(), ready_s: player.ready };
      // Heard past what was final when playback began, the job still running: across a join.
      if (heardNow && job.status === "running" && player.position() > state.live.heard.ready_s) state.live.joined = true;
      Object.assign(state.live, { status: job.status, ready_s: live.readyFrames / SAMPLE_RATE, pieces: live.pieces });
      if (live.done) break;
      if (grew) player.extend(live.readyFrames / SAMPLE_RATE, live.stems());
      view.grow(job);
    } catch (e) {
      if (seq !== openSeq) return;
      if (e instanceof TypeError) { // fetch's way of saying the network failed: poll again
        view.say("The server cannot be reached; retrying…");
        unreachable = true;
        continue;
      }
      state.error = e.message;
      state.live.status = "failed";
      view.say(`Stopped following the job: ${e.message}`);
      view.grow(job, e.message);
      return;
    }
  }
  const stems = live.trim();
  player.extend(stems[0].buffer.duration, stems);
  const { analysis, note } = await loadAnalysis(job);
  if (seq !== openSeq) return;
  state.job = job;
  state.analysis = analysis;
  $("player-title").textContent = title(job);
  view.finish(job, analysis, note);
  audio.practice?.setAnalysis(analysis);
  view.say("Separated: the player holds the finished stems.");
  state.ready = true;
}

async function loadAnalysis(job) {
  if (!job.links.analysis) return { analysis: null, note: "No analysis: the job ran with analysis off." };
  try {
    const r = await apiFetch(job.links.analysis);
    if (r.ok) return { analysis: await r.json(), note: "" };
    const body = await r.json().catch(() => ({}));
    return { analysis: null, note: `No analysis: ${body.error?.message || `HTTP ${r.status}`}` };
  } catch (e) {
    return { analysis: null, note: `No analysis: ${e.message}` };
  }
}
