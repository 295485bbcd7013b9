// The player's page: transport, clock, one lane per stem (mute, solo, volume, pan, waveform),
// the analysis rows and the spectrogram on the same timeline, keyboard shortcuts, downloads.

import { drawBeats, drawSpectrogram, drawWaveform, fillAnalysisRows, fmtTime, trackSummary } from "./views.js";
import { encodeWav } from "./wav.js";
import { el } from "./dom.js";
import { keyedDownload } from "./auth.js";

const COLORS = ["#c2410c", "#1d4ed8", "#047857", "#7c3aed", "#b45309", "#be185d", "#0f766e", "#4d7c0f"];
const SEEK_STEP_S = 5;
const DRAG_PX = 4; // a press that moves less than this is a click (seek), more a selection
const CHORD_KEY_MS = 1500; // M or S, then a number within this time
const GROW_DRAW_MS = 1500; // while a job separates, the waveforms are redrawn at most this often
const FORMATS = [
  ["wav", "WAV 32-bit float"],
  ["wav24", "WAV 24-bit"],
  ["wav16", "WAV 16-bit"],
  ["flac", "FLAC 24-bit"],
  ["flac16", "FLAC 16-bit"],
  ["mp3", "MP3 320 kbit/s"],
];

const $ = (id) => document.getElementById(id);

/** Where a row's timeline was pressed, as seconds of the song. */
function timeAt(tl, clientX, duration) {
  const r = tl.getBoundingClientRect();
  return Math.max(0, Math.min(1, (clientX - r.left) / r.width)) * duration;
}

export class MixerView {
  /**
   * @param {import("./player.js").Player} player
   * @param {{live?: boolean}} opts live: the job still separates (the player holds a prefix)
   */
  constructor(player, job, analysis, analysisNote, opts = {}) {
    this.player = player;
    this.job = job;
    this.analysis = analysis;
    this.live = Boolean(opts.live);
    this.timelines = [];
    this.pendingKey = null;
    this.frame = 0;
    this.drawnAt = 0;
    this.note = "";
    this.build(analysisNote);
    this.onKey = (e) => this.key(e);
    document.addEventListener("keydown", this.onKey);
    this.resize = new ResizeObserver(() => this.scheduleDraw());
    this.resize.observe($("timeline"));
    player.onChange = () => this.update();
    this.update();
    this.tick();
  }

  /** More of a running job arrived (or failed: `problem`): the ready text, overlays, waveforms. */
  grow(job, problem = "") {
    this.job = job;
    this.problem = problem;
    if (performance.now() - this.drawnAt > GROW_DRAW_MS) this.scheduleDraw();
    this.update();
  }

  /** The job is done and the player holds its finished stems: the rows, analysis, downloads. */
  finish(job, analysis, analysisNote) {
    Object.assign(this, { job, analysis, live: false, problem: "" });
    this.build(analysisNote);
    this.update();
  }

  /** Seeks to t, saying so when t lies beyond what is final (the player goes to its end). */
  seekTo(t) {
    const p = this.player;
    const to = p.seek(t);
    this.refused = t > to + 0.05 ? `Only the first ${fmtTime(p.ready, 0)} is final so far: playing from there.` : "";
    this.update();
    return to;
  }

  build(analysisNote) {
    const { player, job, analysis } = this;
    this.timelines = [];
    $("track-info").textContent = analysis ? trackSummary(analysis) : analysisNote;
    const rows = [];
    if (analysis) {
      const segs = () => el("div", { class: "segs" });
      this.analysisRows = { windows: segs(), sections: segs(), chords: segs() };
      this.beats = el("canvas", { class: "beats", "aria-hidden": "true" });
      rows.push(this.row("What plays", this.analysisRows.windows, "Instruments or stems heard in each analysis window"));
      rows.push(this.row("Sections", this.analysisRows.sections, "Sections of the song"));
      rows.push(this.row("Chords", this.analysisRows.chords, "Chords"));
      rows.push(this.row("Beats", this.beats, "Beats"));
    }
    this.lanes = player.stems.map((s, i) => this.lane(s.name, i));
    rows.push(...this.lanes.map((l) => l.row));
    this.specSource = el("select", { id: "spec-source", "aria-label": "Spectrogram of" },
      el("option", { value: "", text: "the mix (all stems)" }),
      ...player.stems.map((s) => el("option", { value: s.name, text: s.name })));
    this.specSource.addEventListener("change", () => this.drawSpectrogram());
    this.spec = el("canvas", { class: "spec", "aria-hidden": "true" });
    const specLabel = el("div", { class: "row-label" }, el("span", { class: "name", text: "Spectrogram" }), this.specSource);
    rows.push(this.row(specLabel, this.spec, "Spectrogram, 40 Hz to 16 kHz"));
    $("timeline").replaceChildren(...rows);
    $("downloads").replaceChildren(...(this.live
      ? [el("p", { class: "help", text: "The downloads appear here when the job is done." })]
      : this.downloads()));
    $("play").onclick = () => player.toggle();
    $("to-start").onclick = () => this.seekTo(0);
    $("loop-on").onchange = (e) => player.setLoopOn(e.target.checked);
    $("loop-clear").onclick = () => player.setLoop(null, false);
    this.scheduleDraw();
  }

  /** A timeline row: a label (or controls) and the timeline with playhead and selection. */
  row(label, content, name) {
    const tl = el("div", {
      class: "tl", tabindex: "0", role: "slider", "aria-label": `${name}: click to seek, drag to select a loop`,
      "aria-valuemin": "0", "aria-valuemax": String(Math.round(this.player.duration)),
    }, content, el("div", { class: "pending", hidden: true }), el("div", { class: "sel", hidden: true }),
    el("div", { class: "playhead" }));
    this.pointer(tl);
    this.timelines.push(tl);
    const head = typeof label === "string" ? el("div", { class: "row-label" }, el("span", { class: "name", text: label })) : label;
    return el("div", { class: "row" }, head, tl);
  }

  lane(name, i) {
    const n = i + 1;
    const mute = el("button", { type: "button", class: "toggle mute", "aria-pressed": "false", "aria-label": `Mute ${name} (M ${n})`, text: "M" });
    const solo = el("button", { type: "button", class: "toggle solo", "aria-pressed": "false", "aria-label": `Solo ${name} (S ${n})`, text: "S" });
    const m = this.player.mixer[i]; // a rebuilt view (the job finished) keeps the mixer as set
    const volume = el("input", { type: "range", min: "0", max: "2", step: "0.01", value: String(m.volume), "aria-label": `Volume of ${name}` });
    const pan = el("input", { type: "range", min: "-1", max: "1", step: "0.05", value: String(m.pan), "aria-label": `Pan of ${name}` });
    const volOut = el("output", { class: "val", text: "0 dB" });
    const panOut = el("output", { class: "val", text: "C" });
    mute.onclick = () => this.player.set(i, "mute", !this.player.mixer[i].mute);
    solo.onclick = () => this.player.set(i, "solo", !this.player.mixer[i].solo);
    volume.oninput = () => this.player.set(i, "volume", Number(volume.value));
    pan.oninput = () => this.player.set(i, "pan", Number(pan.value));
    const canvas = el("canvas", { class: "wave", "aria-hidden": "true" });
    const label = el("div", { class: "row-label lane-ctl" },
      el("span", { class: "name", style: `color:${COLORS[i % COLORS.length]}`, text: `${n} ${name}` }),
      el("span", { class: "buttons" }, mute, solo),
      el("label", { class: "slider" }, "vol", volume, volOut),
      el("label", { class: "slider" }, "pan", pan, panOut));
    const row = this.row(label, canvas, `Waveform of ${name}`);
    row.classList.add("lane");
    row.dataset.stem = name;
    return { row, canvas, mute, solo, volume, pan, volOut, panOut };
  }

  downloads() {
    const { job } = this;
    const l = job.links;
    const base = (job.filename || "audio").replace(/\.[^.]*$/, "") || "audio";
    const zipFormat = el("select", { id: "zip-format", "aria-label": "Format of the stems in the ZIP" },
      ...FORMATS.map(([v, t]) => el("option", { value: v, text: t })));
    zipFormat.value = "flac"; // the gateway's default for the ZIP: lossless, 2.4x smaller than float
    const clip = el("select", { id: "clip", "aria-label": "Samples beyond full scale", "aria-describedby": "clip-help" },
      el("option", { value: "rescale", text: "rescale every stem together" }),
      el("option", { value: "clamp", text: "clamp each sample" }));
    const zip = el("a", { href: l.zip, download: "", id: "dl-zip", text: "ZIP of all stems + analysis" });
    const stemLinks = [];
    const midi = this.midiLinks();
    const stems = job.stems.map((s) => el("li", {},
      el("span", { class: "name", text: s }),
      ...FORMATS.map(([f, t]) => {
        const a = el("a", { download: "", "data-stem": s, "data-format": f, "aria-label": `${s} as ${t}`, text: t });
        stemLinks.push(a);
        return a;
      }),
      ...(midi.stems[s] ? [midi.stems[s]] : [])));
    // The float WAV holds any value; the other formats need the clip choice.
    const query = (f) => (f === "wav" ? "?format=wav" : `?format=${f}&clip=${clip.value}`);
    const setHrefs = () => {
      for (const a of stemLinks) a.href = `${l.stems[a.dataset.stem]}${query(a.dataset.format)}`;
      zip.href = `${l.zip}${query(zipFormat.value)}`;
    };
    zipFormat.onchange = setHrefs;
    clip.onchange = setHrefs;
    setHrefs();
    const result = el("a", { href: l.result, download: "", id: "dl-result", text: "All stems in one multi-channel WAV" });
    for (const a of [zip, result, ...stemLinks, ...midi.all]) keyedDownload(a, (m) => this.say(m));
    const peak = job.peak != null && job.peak > 1
      ? `The stems peak at ${job.peak.toFixed(2)}, beyond full scale: `
      : "";
    const mixBits = el("select", { id: "mix-bits", "aria-label": "Format of my mix" },
      el("option", { value: "16", text: "WAV 16-bit" }), el("option", { value: "32", text: "WAV 32-bit float" }));
    const onlyLoop = el("input", { type: "checkbox", id: "mix-loop" });
    const mixButton = el("button", { type: "button", id: "dl-mix", text: "Download my mix" });
    const mixStatus = el("span", { class: "help", id: "mix-status", "aria-live": "polite" });
    mixButton.onclick = async () => {
      mixButton.disabled = true;
      mixStatus.textContent = "Rendering…";
      try {
        const loop = onlyLoop.checked && this.player.loop;
        const rendered = await this.player.renderMix(loop ? { start: loop.start, end: loop.end } : {});
        const blob = new Blob([encodeWav(rendered, Number(mixBits.value))], { type: "audio/wav" });
        const a = el("a", { href: URL.createObjectURL(blob), download: `${base}_mix.wav` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
        mixStatus.textContent = `Saved ${base}_mix.wav (${fmtTime(rendered.duration)}).`;
      } catch (e) {
        mixStatus.textContent = `Could not render the mix: ${e.message}`;
      } finally {
        mixButton.disabled = false;
      }
    };
    return [
      el("p", {}, result,
        ` (32-bit float, 2 channels per stem in the order ${job.stems.join(", ")})`),
      el("p", {}, zip, " — stems as ", zipFormat),
      el("p", {}, el("label", { for: "clip" }, "Beyond full scale (all but float WAV): "), clip),
      el("p", { class: "help", id: "clip-help", text: `${peak}16/24-bit and MP3 files cannot hold samples beyond ±1. ` +
        "Rescale turns the whole set down together (the stems still sum to the mix); clamp cuts each sample." }),
      ...midi.about,
      el("ul", { class: "stem-links" }, ...stems),
      el("p", { class: "mix" }, mixButton, " as ", mixBits, " ",
        el("label", { class: "inline" }, onlyLoop, " only the selection"), " ", mixStatus),
      el("p", { class: "help", text: "My mix: the stems as the mixer plays them now (mute, solo, volume, pan), rendered in this browser." }),
    ];
  }

  /**
   * The job's MIDI, where it has one: `all` its links (the whole file first), `stems` the link
   * of each transcribed stem by name (for its row of the stem downloads), `about` the
   * paragraphs for the whole file and who made the notes and the tempo map.
   */
  midiLinks() {
    const href = this.job.links.midi;
    if (!href) return { all: [], stems: {}, about: [] };
    const { midi, models } = this.analysis?.track || {};
    const whole = el("a", { href, download: "", id: "dl-midi", "aria-label": "MIDI of all stems", text: "MIDI" });
    const stems = {};
    for (const s of midi?.stems || []) {
      const notes = midi.notes?.[s];
      stems[s] = el("a", {
        href: `${href}/${s}`, download: "", "data-midi-stem": s, text: "MIDI",
        "aria-label": `${s} as MIDI${notes != null ? ` (${notes} notes)` : ""}`,
      });
    }
    const by = [midi?.model && `notes by ${midi.model.name} (${midi.model.licence})`,
      models?.beats && `tempo map from ${models.beats.name} beats (${models.beats.licence})`].filter(Boolean);
    const what = midi?.stems?.length ? `one track per stem: ${midi.stems.join(", ")}` : "only the tempo map (no stem was transcribed)";
    const about = [el("p", {}, whole, ` — the stems in one file, ${what}${by.length ? `; ${by.join(", ")}` : ""}`)];
    return { all: [whole, ...Object.values(stems)], stems, about };
  }

  /** Click to seek, drag to select a loop region, on any timeline row. */
  pointer(tl) {
    tl.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      const d = this.player.duration;
      const x0 = e.clientX;
      const t0 = timeAt(tl, x0, d);
      let dragging = false;
      tl.setPointerCapture(e.pointerId);
      const move = (ev) => {
        if (!dragging && Math.abs(ev.clientX - x0) < DRAG_PX) return;
        dragging = true;
        const t1 = timeAt(tl, ev.clientX, d);
        this.showSelection({ start: Math.min(t0, t1), end: Math.max(t0, t1) });
      };
      const up = (ev) => {
        tl.removeEventListener("pointermove", move);
        tl.removeEventListener("pointerup", up);
        const t1 = timeAt(tl, ev.clientX, d);
        if (dragging) this.player.setLoop({ start: Math.min(t0, t1), end: Math.max(t0, t1) }, true);
        else this.seekTo(t1);
      };
      tl.addEventListener("pointermove", move);
      tl.addEventListener("pointerup", up);
    });
  }

  key(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const tag = t?.tagName;
    if (["INPUT", "SELECT", "TEXTAREA"].includes(tag) || t?.isContentEditable) return;
    const p = this.player;
    const k = e.key.toLowerCase();
    if (k === " " || k === "spacebar") {
      if (tag === "BUTTON" || tag === "A" || tag === "SUMMARY") return; // Space presses those
      e.preventDefault();
      p.toggle();
    } else if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      e.preventDefault();
      this.seekTo(p.position() + (e.key === "ArrowLeft" ? -SEEK_STEP_S : SEEK_STEP_S));
    } else if (e.key === "Home") {
      e.preventDefault();
      this.seekTo(0);
    } else if (e.key === "End") {
      e.preventDefault();
      this.seekTo(p.duration);
    } else if (k === "m" || k === "s") {
      this.pendingKey = { what: k === "m" ? "mute" : "solo", until: performance.now() + CHORD_KEY_MS };
    } else if (/^[1-9]$/.test(e.key) && this.pendingKey && performance.now() < this.pendingKey.until) {
      const i = Number(e.key) - 1;
      if (i < p.mixer.length) p.set(i, this.pendingKey.what, !p.mixer[i][this.pendingKey.what]);
      this.pendingKey = null;
    } else if (k === "l") {
      p.setLoopOn(!p.loopOn);
    } else if (e.key === "[" || e.key === "]") {
      const at = p.position();
      const old = p.loop || { start: 0, end: p.duration };
      const region = e.key === "[" ? { start: at, end: Math.max(at, old.end) } : { start: Math.min(at, old.start), end: at };
      p.setLoop(region, true);
    }
  }

  /** Reflects the player's state in the controls (called on every change). */
  update() {
    const p = this.player;
    $("play").textContent = p.playing ? "▮▮ Pause" : "▶ Play";
    $("play").setAttribute("aria-label", p.playing ? "Pause" : "Play");
    this.lanes.forEach((l, i) => {
      const m = p.mixer[i];
      l.mute.setAttribute("aria-pressed", String(m.mute));
      l.solo.setAttribute("aria-pressed", String(m.solo));
      l.volOut.textContent = m.volume > 0 ? `${(20 * Math.log10(m.volume)).toFixed(1)} dB` : "−∞ dB";
      l.panOut.textContent = Math.abs(m.pan) < 0.01 ? "C" : `${m.pan < 0 ? "L" : "R"}${Math.round(Math.abs(m.pan) * 100)}`;
      l.row.classList.toggle("silent", p.mixer.length > 0 && (m.mute || (p.mixer.some((s) => s.solo) && !m.solo)));
    });
    $("loop-on").disabled = !p.loop;
    $("loop-on").checked = p.loopOn;
    $("loop-clear").disabled = !p.loop;
    $("loop-info").textContent = p.loop ? `selection ${fmtTime(p.loop.start)}–${fmtTime(p.loop.end)}` : "";
    this.showSelection(p.loop);
    this.showReady();
    this.showStatus();
    this.drawClock();
  }

  /** A word from the page, said after the transport's state on the status line ("": none). */
  say(note) {
    this.note = note;
    this.showStatus();
  }

  /** The status line: what the transport does now, and what Space does from there. */
  showStatus() {
    const p = this.player;
    const at = p.position();
    let text;
    if (p.playing && p.waiting) text = "Waiting for the next seconds to be separated — Space pauses.";
    else if (p.playing) text = this.live ? "Playing while it separates — Space pauses." : "Playing — Space pauses.";
    else if (at > 0) text = `Paused at ${fmtTime(at)} — Space or ▶ plays on from there.`;
    else text = this.live ? "Ready: the first seconds are separated — Space or ▶ plays them." : "Ready — Space or ▶ plays.";
    $("player-status").textContent = this.note ? `${text} ${this.note}` : text;
  }

  /** "Ready to 1:20 of 4:05" and a shaded band over what is not final yet, on every row. */
  showReady() {
    const p = this.player;
    const info = $("ready-info");
    const partial = this.live && p.partial();
    info.hidden = !partial && !this.problem;
    const waiting = p.playing && p.waiting ? " — waiting for the next seconds…" : "";
    info.textContent = this.problem
      || (partial ? `Separating: ready to ${fmtTime(p.ready, 0)} of ${fmtTime(this.job.duration_s, 0)}${waiting}${this.refused ? ` ${this.refused}` : ""}` : "");
    const from = `${(100 * p.ready) / (p.duration || 1)}%`;
    for (const tl of this.timelines) {
      const band = tl.querySelector(".pending");
      band.hidden = !partial;
      band.style.left = from;
    }
  }

  showSelection(region) {
    const d = this.player.duration;
    for (const tl of this.timelines) {
      const sel = tl.querySelector(".sel");
      sel.hidden = !region;
      if (region) {
        sel.style.left = `${(100 * region.start) / d}%`;
        sel.style.width = `${(100 * (region.end - region.start)) / d}%`;
      }
    }
  }

  drawClock() {
    const p = this.player;
    const at = p.position();
    $("clock").textContent = `${fmtTime(at)} / ${fmtTime(p.duration)}`;
    const pct = `${(100 * at) / (p.duration || 1)}%`;
    for (const tl of this.timelines) {
      tl.querySelector(".playhead").style.left = pct;
      tl.setAttribute("aria-valuenow", String(Math.round(at)));
      tl.setAttribute("aria-valuetext", `${fmtTime(at, 0)} of ${fmtTime(p.duration, 0)}`);
    }
  }

  tick() {
    if (this.player.playing) this.drawClock();
    this.frame = requestAnimationFrame(() => this.tick());
  }

  scheduleDraw() {
    clearTimeout(this.drawTimer);
    this.drawTimer = setTimeout(() => this.draw(), 80);
  }

  draw() {
    const { player, analysis } = this;
    const t0 = performance.now();
    this.drawnAt = t0;
    this.lanes.forEach((l, i) => drawWaveform(l.canvas, player.stems[i].buffer, COLORS[i % COLORS.length]));
    if (analysis) {
      fillAnalysisRows(this.analysisRows, analysis, player.duration);
      drawBeats(this.beats, analysis.track?.beats_s, analysis.track?.downbeats_s, player.duration, "#555");
    }
    this.drawSpectrogram();
    this.drawnMs = performance.now() - t0; // read by bench/bench_page.py
  }

  drawSpectrogram() {
    const which = this.specSource.value;
    const stems = this.player.stems.filter((s) => !which || s.name === which);
    drawSpectrogram(this.spec, stems.map((s) => s.buffer));
  }

  dispose() {
    cancelAnimationFrame(this.frame);
    clearTimeout(this.drawTimer);
    this.resize.disconnect();
    document.removeEventListener("keydown", this.onKey);
    this.player.dispose();
  }
}
