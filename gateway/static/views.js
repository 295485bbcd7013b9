// Drawings on the shared timeline: waveforms, the spectrogram and the analysis rows.
// x = t / duration of each row's width, so every row lines up with the waveforms.

import { hann, makeFFT } from "./fft.js";
import { semitoneText, transposeChord, transposeKey } from "./transpose.js";

const SPEC_FFT = 4096; // samples per spectrogram column: 93 ms, 10.8 Hz bins at 44.1 kHz
const SPEC_MIN_HZ = 40;
const SPEC_MAX_HZ = 16000;
const SPEC_RANGE_DB = 70; // dB from the darkest colour to the brightest

/** Sizes a canvas's pixels to its CSS box at the screen's density; returns [width, height]. */
function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  return [w, h];
}

/** A waveform: per pixel column, the min and max sample of either channel over that column. */
export function drawWaveform(canvas, buffer, color) {
  const [w, h] = fitCanvas(canvas);
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, w, h);
  const planes = [];
  for (let c = 0; c < buffer.numberOfChannels; c++) planes.push(buffer.getChannelData(c));
  const n = buffer.length;
  const mid = h / 2;
  g.fillStyle = color;
  g.fillRect(0, mid, w, 1);
  for (let x = 0; x < w; x++) {
    const a = Math.floor((x * n) / w);
    const b = Math.max(a + 1, Math.floor(((x + 1) * n) / w));
    let lo = 0;
    let hi = 0;
    for (const p of planes) {
      for (let i = a; i < b; i++) {
        const v = p[i];
        if (v < lo) lo = v;
        else if (v > hi) hi = v;
      }
    }
    const top = mid - Math.min(1, hi) * mid;
    const bottom = mid - Math.max(-1, lo) * mid;
    g.fillRect(x, top, 1, Math.max(1, bottom - top));
  }
}

/** Colour map from quiet (dark blue) to loud (yellow): 256 RGB triples. */
const PALETTE = (() => {
  const stops = [[10, 10, 40], [60, 20, 110], [170, 40, 110], [240, 120, 40], [255, 240, 120]];
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = (i / 255) * (stops.length - 1);
    const k = Math.min(stops.length - 2, Math.floor(t));
    const f = t - k;
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = stops[k][c] + f * (stops[k + 1][c] - stops[k][c]);
  }
  return lut;
})();

/**
 * A spectrogram of the sum of `buffers` (mono: the mean of the channels): one 4096-point STFT
 * frame centred on each pixel column, a log-frequency axis from 40 Hz to 16 kHz, dB colours.
 */
export function drawSpectrogram(canvas, buffers) {
  const [w, h] = fitCanvas(canvas);
  const g = canvas.getContext("2d");
  const image = g.createImageData(w, h);
  if (!buffers.length) {
    g.putImageData(image, 0, 0);
    return;
  }
  const { length: n, sampleRate: rate } = buffers[0];
  const planes = buffers.flatMap((b) => Array.from({ length: b.numberOfChannels }, (_, c) => b.getChannelData(c)));
  const scale = 1 / (planes.length / buffers.length);
  const fft = makeFFT(SPEC_FFT);
  const win = hann(SPEC_FFT);
  const re = new Float32Array(SPEC_FFT);
  const im = new Float32Array(SPEC_FFT);
  // Row y (0 = top) -> FFT bin, on a log-frequency scale.
  const bins = new Uint16Array(h);
  for (let y = 0; y < h; y++) {
    const hz = SPEC_MIN_HZ * Math.pow(SPEC_MAX_HZ / SPEC_MIN_HZ, 1 - y / Math.max(1, h - 1));
    bins[y] = Math.min(SPEC_FFT / 2 - 1, Math.round((hz * SPEC_FFT) / rate));
  }
  const norm = 2 / (SPEC_FFT / 2); // a full-scale sine reads about 0 dB
  const db = new Float32Array(w * h);
  let top = -Infinity;
  for (let x = 0; x < w; x++) {
    const centre = Math.floor(((x + 0.5) * n) / w);
    const start = centre - SPEC_FFT / 2;
    for (let i = 0; i < SPEC_FFT; i++) {
      const j = start + i;
      let v = 0;
      if (j >= 0 && j < n) for (const p of planes) v += p[j];
      re[i] = v * scale * win[i];
      im[i] = 0;
    }
    fft.transform(re, im);
    for (let y = 0; y < h; y++) {
      const k = bins[y];
      const d = 20 * Math.log10(Math.hypot(re[k], im[k]) * norm + 1e-9);
      db[y * w + x] = d;
      if (d > top) top = d;
    }
  }
  // Colours span SPEC_RANGE_DB below the loudest bin, so quiet and loud songs both show detail.
  for (let i = 0; i < w * h; i++) {
    const level = Math.max(0, Math.min(255, Math.round((1 + (db[i] - top) / SPEC_RANGE_DB) * 255)));
    image.data[i * 4] = PALETTE[level * 3];
    image.data[i * 4 + 1] = PALETTE[level * 3 + 1];
    image.data[i * 4 + 2] = PALETTE[level * 3 + 2];
    image.data[i * 4 + 3] = 255;
  }
  g.putImageData(image, 0, 0);
}

/** Beat ticks (downbeats taller) across a canvas. */
export function drawBeats(canvas, beats, downbeats, duration, color) {
  const [w, h] = fitCanvas(canvas);
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, w, h);
  g.fillStyle = color;
  const dpr = window.devicePixelRatio || 1;
  const down = new Set((downbeats || []).map((t) => t.toFixed(2)));
  for (const t of beats || []) {
    const x = Math.round((t / duration) * w);
    const tall = down.has(t.toFixed(2));
    g.fillRect(x, tall ? 0 : h * 0.4, Math.max(1, dpr), tall ? h : h * 0.6);
  }
}

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

/** A segment spanning [start, end) seconds of a timeline row. */
function segment(start, end, duration, text, title, cls) {
  const s = el("span", { class: `seg ${cls}`, title }, text);
  s.style.left = `${(100 * start) / duration}%`;
  s.style.width = `${(100 * Math.max(0, end - start)) / duration}%`;
  return s;
}

/** What a window holds, in a few words: AST's top labels, else the stems judged present. */
export function windowSummary(w) {
  const labels = (w.labels || []).slice(0, 3).map((l) => l.label);
  const present = Object.entries(w.stems_present || {})
    .filter(([, score]) => score >= 0.5)
    .sort((a, b) => b[1] - a[1])
    .map(([stem]) => stem);
  return { labels, present };
}

/**
 * A note, key or chord name as musicians read it: the API's ASCII "Bb", "Ebm", "F#m", "C/Bb"
 * with ♭ and ♯ ("B♭", "E♭m", "F♯m", "C/B♭"). Only an accidental right after a note letter
 * changes: "N" (no chord) and a quality such as "7b9" stay as they are.
 */
export function withAccidentals(name) {
  return String(name).replace(/([A-G])([b#]{1,2})/g, (_, letter, acc) =>
    letter + acc.replaceAll("b", "♭").replaceAll("#", "♯"));
}

/** "B♭ major" (moved by `semitones`: "C major" at +2), or "key unknown". */
function keyName(key, semitones = 0) {
  return key ? `${withAccidentals(transposeKey(key, semitones).tonic)} ${key.mode}` : "key unknown";
}

// Blocks of one section label share a colour, so a song's form (A B A …) reads at a glance.
const SECTION_CLASSES = 4;

/** The section label's colour class: blocks of one label share one. */
export function sectionClass(sections, label) {
  const labels = [...new Set(sections.map((s) => s.label))];
  return `part-${labels.indexOf(label) % SECTION_CLASSES}`;
}

/**
 * Fills the analysis rows of the timeline: `rows.windows` (one segment per analysis window:
 * what plays), `rows.sections` (the song's form, A B A …) and `rows.chords`; keys and chords
 * moved by `semitones` (the player's pitch shift).
 */
export function fillAnalysisRows(rows, analysis, duration, semitones = 0) {
  for (const row of Object.values(rows)) row.replaceChildren();
  for (const w of analysis.windows || []) {
    const { labels, present } = windowSummary(w);
    const text = labels.length ? labels.join(", ") : present.join(" + ") || "quiet";
    const title = `${fmtTime(w.start_s)}–${fmtTime(w.start_s + w.duration_s)}: ${text}; ${keyName(w.key, semitones)}` +
      (w.loudness_lufs != null ? `; ${w.loudness_lufs.toFixed(1)} LUFS` : "");
    rows.windows.append(segment(w.start_s, Math.min(duration, w.start_s + w.duration_s), duration, text, title, "win"));
  }
  const track = analysis.track || {};
  const why = (k, what) => el("span", { class: "none" }, `no ${what}: ${track.reasons?.[k] || "not found"}`);
  if (track.sections?.length) {
    for (const s of track.sections) {
      const title = `Section ${s.label}: ${fmtTime(s.start_s)}–${fmtTime(s.end_s)}`;
      const cls = `part ${sectionClass(track.sections, s.label)}`;
      rows.sections.append(segment(s.start_s, Math.min(duration, s.end_s), duration, s.label, title, cls));
    }
  } else {
    rows.sections.append(why("sections", "sections"));
  }
  fillChords(rows.chords, analysis, duration, semitones);
}

/** The chords row alone (redone when the pitch shift changes): names moved by `semitones`. */
export function fillChords(row, analysis, duration, semitones = 0) {
  const track = analysis.track || {};
  row.replaceChildren();
  if (!track.chords) {
    row.append(el("span", { class: "none" }, `no chords: ${track.reasons?.chords || "not found"}`));
    return;
  }
  for (const c of track.chords) {
    if (c.chord === "N") continue; // no chord: left blank
    const name = withAccidentals(transposeChord(c.chord, semitones, track.key));
    row.append(segment(c.start_s, c.end_s, duration, name, `${name} at ${fmtTime(c.start_s)}`, "chord"));
  }
}

/**
 * "key B♭ major · 120.0 bpm · 4/4 · −14.2 LUFS", with the reason in place of each missing value;
 * with the player's `semitones` and `speed`: "key C major (+2) · 96.0 bpm at 80 % · 4/4 · …".
 */
export function trackSummary(analysis, { semitones = 0, speed = 1 } = {}) {
  const t = analysis.track || {};
  const why = (k) => (t.reasons?.[k] ? ` (${t.reasons[k]})` : "");
  const metre = t.time_signature ? ` · ${t.time_signature}/4` : "";
  const shift = semitones ? ` (${semitoneText(semitones)})` : "";
  const pace = speed !== 1 ? ` at ${Math.round(speed * 100)} %` : "";
  const parts = [
    t.key ? `key ${keyName(t.key, semitones)}${shift}` : `key unknown${why("key")}`,
    t.tempo_bpm != null ? `${(t.tempo_bpm * speed).toFixed(1)} bpm${pace}${metre}` : `tempo unknown${why("tempo")}`,
    t.loudness_lufs != null ? `${t.loudness_lufs.toFixed(1)} LUFS` : `loudness unknown${why("loudness")}`,
  ];
  if (t.errors?.length) parts.push(`analysis failed: ${t.errors.join("; ")}`);
  if (analysis.tone_model?.status === "unavailable") {
    parts.push(`instrument labels unavailable: ${analysis.tone_model.reason}`);
  }
  return parts.join(" · ");
}

/** 83.4 -> "1:23.4" */
export function fmtTime(s, decimals = 1) {
  if (!Number.isFinite(s)) return "–";
  const m = Math.floor(s / 60);
  const sec = s - 60 * m;
  return `${m}:${sec.toFixed(decimals).padStart(decimals ? 3 + decimals : 2, "0")}`;
}
