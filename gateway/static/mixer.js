// The player's page: transport, clock, one lane per stem (mute, solo, volume, pan, waveform),
// the analysis rows and the spectrogram on the same timeline, loops snapped to beats or bars and
// one per section (loops.js), the key, tempo and chords as the pitch and speed make them,
// keyboard shortcuts, the offline copy (offline.js) and the downloads (downloads.js).

import { drawBeats, drawSpectrogram, drawWaveform, fillAnalysisRows, fillChords, fmtTime, trackSummary } from "./views.js";
import { sectionBands, sectionButtons, snapGrid, snapRegion, snapTime } from "./loops.js";
import { offlineControls } from "./offline.js";
import { el } from "./dom.js";
import { downloads } from "./downloads.js";

const COLORS = ["#c2410c", "#1d4ed8", "#047857", "#7c3aed", "#b45309", "#be185d", "#0f766e", "#4d7c0f"];
const SEEK_STEP_S = 5;
const DRAG_PX = 4; // a press that moves less than this is a click (seek), more a selection
const CHORD_KEY_MS = 1500; // M or S, then a number within this time
const GROW_DRAW_MS = 1500; // while a job separates, the waveforms are redrawn at most this often

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
    this.abStart = null; // where the A key put the start of a loop still without its end
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
    this.analysisNote = analysisNote;
    this.shownPractice = "";
    this.sections = analysis?.track?.sections || [];
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
      : downloads(job, analysis, player, (m) => this.say(m))));
    $("play").onclick = () => player.toggle();
    $("to-start").onclick = () => this.seekTo(0);
    $("loop-on").onchange = (e) => player.setLoopOn(e.target.checked);
    $("loop-clear").onclick = () => player.setLoop(null, false);
    this.buildLoopTools();
    $("offline-ctl").replaceChildren(...(this.live ? [] : offlineControls(job)));
    this.scheduleDraw();
  }

  /** The snap choice (beats or bars of the analysis) and one loop button per section. */
  buildLoopTools() {
    const { analysis, player } = this;
    const snap = $("snap");
    const beats = snapGrid(analysis, "beats").length > 0;
    snap.disabled = !beats;
    if (!beats) snap.value = "off";
    $("snap-note").textContent = beats ? "" : analysis ? "(no beats found: loops do not snap)" : "(no analysis: loops do not snap)";
    for (const o of snap.options) o.disabled = o.value !== "off" && !snapGrid(analysis, o.value).length;
    const buttons = sectionButtons(this.sections, (s) => {
      player.setLoop({ start: s.start_s, end: s.end_s }, true);
      if (!player.playing) this.seekTo(s.start_s);
    });
    $("sections").replaceChildren(...buttons);
    $("sections").hidden = !buttons.length;
  }

  /** The player's pitch shift (whole semitones) and speed, as the track summary shows them. */
  practice() {
    return { semitones: Math.round(this.player.semitones ?? 0), speed: this.player.speed ?? 1 };
  }

  /** t on the beats or bars of the analysis when snapping is on (else t). */
  snapped(t) {
    return snapTime(t, snapGrid(this.analysis, $("snap").value));
  }

  /** A region dragged or keyed: its ends on the snap grid when snapping is on. */
  snappedRegion(region) {
    return snapRegion(region, snapGrid(this.analysis, $("snap").value), this.player.duration);
  }

  /** The key, tempo and chords as they sound now: moved by the pitch shift, scaled by the speed. */
  showPractice() {
    const now = this.practice();
    const id = `${now.semitones} ${now.speed}`;
    if (id === this.shownPractice) return;
    this.shownPractice = id;
    $("track-info").textContent = this.analysis ? trackSummary(this.analysis, now) : this.analysisNote;
    if (this.analysis && this.drawnAt) fillChords(this.analysisRows.chords, this.analysis, this.player.duration, now.semitones);
  }

  /** A timeline row: a label (or controls) and the timeline with playhead and selection. */
  row(label, content, name) {
    const tl = el("div", {
      class: "tl", tabindex: "0", role: "slider", "aria-label": `${name}: click to seek, drag to select a loop`,
      "aria-valuemin": "0", "aria-valuemax": String(Math.round(this.player.duration)),
    }, ...(this.sections.length ? [sectionBands(this.sections, this.player.duration)] : []), content,
    el("div", { class: "pending", hidden: true }), el("div", { class: "sel", hidden: true }),
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
        this.showSelection(this.snappedRegion({ start: Math.min(t0, t1), end: Math.max(t0, t1) }));
      };
      const up = (ev) => {
        tl.removeEventListener("pointermove", move);
        tl.removeEventListener("pointerup", up);
        const t1 = timeAt(tl, ev.clientX, d);
        if (dragging) this.player.setLoop(this.snappedRegion({ start: Math.min(t0, t1), end: Math.max(t0, t1) }), true);
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
    } else if (k === "a" || k === "b") {
      this.abKey(k); // [ and ] are the speed's (practice.js)
    }
  }

  /** A: the loop starts at the playhead (kept until B, or moved in the loop there is);
   *  B: the loop ends at the playhead and plays. Both snapped when snapping is on. */
  abKey(k) {
    const p = this.player;
    const at = this.snapped(p.position());
    if (k === "a") {
      this.abStart = at;
      if (p.loop && p.loop.end > at) p.setLoop({ start: at, end: p.loop.end }, p.loopOn);
      else this.say(`Loop from ${fmtTime(at)}: B sets its end.`);
      return;
    }
    const start = this.abStart ?? p.loop?.start ?? 0;
    if (at <= start) return this.say(`B must come after the loop's start (${fmtTime(start)}).`);
    this.abStart = null;
    this.say("");
    p.setLoop({ start, end: at }, true);
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
    this.showPractice();
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
      fillAnalysisRows(this.analysisRows, analysis, player.duration, this.practice().semitones);
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
