// A job's stems as AudioBuffers: fetched whole once the job is done, or piece by piece while it
// still separates (the server serves the final prefix of each stem; `?from_frame=N` gives only
// frames [N, ready) of it, so each poll fetches just what is new).

import { apiFetch } from "./auth.js";

/** One stem as an AudioBuffer, decoded by the browser; adds its fetch and decode times. */
export async function fetchStem(ctx, url, timings) {
  const t0 = performance.now();
  const r = await apiFetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  const bytes = await r.arrayBuffer();
  const t1 = performance.now();
  const buffer = await ctx.decodeAudioData(bytes);
  timings.fetch_ms += t1 - t0;
  timings.decode_ms += performance.now() - t1;
  return buffer;
}

const WAVE_FLOAT = 3;
const WAVE_EXTENSIBLE = 0xfffe;

/**
 * The samples of a 32-bit float WAV, read here rather than by decodeAudioData: exact by
 * construction, synchronous, and fine with a data chunk whose size field a stream left open.
 * @returns {{channels: number, rate: number, frames: number, planes: Float32Array[]}}
 */
export function parseFloatWav(bytes) {
  const view = new DataView(bytes);
  const tag = (p) => String.fromCharCode(...new Uint8Array(bytes, p, 4));
  if (bytes.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("not a WAV file");
  let p = 12;
  let fmt = null;
  while (p + 8 <= bytes.byteLength) {
    const id = tag(p);
    const size = view.getUint32(p + 4, true);
    if (id === "fmt ") {
      let format = view.getUint16(p + 8, true);
      if (format === WAVE_EXTENSIBLE) format = view.getUint16(p + 8 + 24, true); // the sub-format GUID's first bytes
      fmt = { format, channels: view.getUint16(p + 10, true), rate: view.getUint32(p + 12, true), bits: view.getUint16(p + 22, true) };
    } else if (id === "data") {
      if (!fmt || fmt.format !== WAVE_FLOAT || fmt.bits !== 32) {
        throw new Error(`expected a 32-bit float WAV, got format ${fmt?.format} with ${fmt?.bits} bits`);
      }
      const start = p + 8;
      const available = bytes.byteLength - start;
      const length = size > available ? available : size; // a streamed file may say 0xFFFFFFFF
      const frames = Math.floor(length / (4 * fmt.channels));
      const samples = new Float32Array(bytes.slice(start, start + frames * 4 * fmt.channels));
      const planes = Array.from({ length: fmt.channels }, () => new Float32Array(frames));
      for (let i = 0, k = 0; i < frames; i++) for (let c = 0; c < fmt.channels; c++) planes[c][i] = samples[k++];
      return { channels: fmt.channels, rate: fmt.rate, frames, planes };
    }
    p += 8 + size + (size % 2); // chunks are padded to an even size
  }
  throw new Error("WAV file without a data chunk");
}

/**
 * The stems of a running job, held in AudioBuffers as long as the song (a little longer until
 * the job is done: `duration_s` is rounded to the millisecond), filled from the start as the
 * result becomes final. `frames[i]` frames of stem i are held; `readyFrames` is the least.
 */
export class LiveStems {
  constructor(ctx, job) {
    this.ctx = ctx;
    this.job = job;
    this.rate = ctx.sampleRate;
    this.names = job.stems;
    const frames = Math.ceil((job.duration_s + 0.001) * this.rate);
    this.buffers = this.names.map(() => ctx.createBuffer(2, frames, this.rate));
    this.frames = this.names.map(() => 0);
    this.complete = this.names.map(() => false);
    this.pieces = 0; // pieces fetched, all stems together (for the tests and the curious)
  }

  get readyFrames() {
    return Math.min(...this.frames);
  }

  get done() {
    return this.complete.every(Boolean);
  }

  /** Stems and buffers as the Player takes them. */
  stems() {
    return this.names.map((name, i) => ({ name, buffer: this.buffers[i] }));
  }

  /** Fetches what is new of every stem for `job` (its latest JSON); true when something came. */
  async grow(job) {
    this.job = job;
    const grew = await Promise.all(this.names.map((_, i) => this.growStem(i)));
    return grew.some(Boolean);
  }

  async growStem(i) {
    if (this.complete[i]) return false;
    const wanted = Math.round(this.job.ready_s * this.rate);
    const done = this.job.status === "done";
    if (!done && wanted <= this.frames[i]) return false;
    // Ask from one frame before what is held: the answer is never empty (a done job answers
    // 422 for a start at its end), and the frame both have must agree.
    const held = this.frames[i];
    const from = Math.max(0, held - 1);
    const url = `${this.job.links.stems[this.names[i]]}?format=wav&from_frame=${from}`;
    const r = await apiFetch(url);
    if (r.status === 409) return false; // nothing final at `from` yet: the next poll asks again
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new Error(`${this.names[i]}: ${body.error?.message || `HTTP ${r.status}`}`);
    }
    const fromHeader = r.headers.get("X-Audiosplit-From-Frame");
    if (fromHeader === null) throw new Error(`${this.names[i]}: the server does not say which frames it sent (no X-Audiosplit-From-Frame)`);
    const start = Number(fromHeader);
    const readyHeader = r.headers.get("X-Audiosplit-Ready-Frames");
    const wav = parseFloatWav(await r.arrayBuffer());
    if (start !== from || wav.channels !== 2 || wav.rate !== this.rate) {
      throw new Error(`${this.names[i]}: a piece from frame ${start} (${wav.channels} channels at ${wav.rate} Hz), expected frame ${from}, stereo at ${this.rate} Hz`);
    }
    const skip = held - from;
    if (skip && held > 0) {
      const mine = [0, 1].map((c) => this.buffers[i].getChannelData(c)[held - 1]);
      if (mine[0] !== wav.planes[0][0] || mine[1] !== wav.planes[1][0]) {
        throw new Error(`${this.names[i]}: frame ${held - 1} changed between two fetches`);
      }
    }
    const end = start + wav.frames;
    if (end > this.buffers[i].length) this.resize(i, end);
    for (let c = 0; c < 2; c++) this.buffers[i].copyToChannel(wav.planes[c].subarray(skip), c, held);
    this.frames[i] = end;
    this.pieces++;
    if (done && readyHeader === null) throw new Error(`${this.names[i]}: the server does not say how far the result is final`);
    // Complete: the job is done and the piece reaches as far as the result is final, its end.
    if (done && readyHeader !== null && end === Number(readyHeader)) this.complete[i] = true;
    return end > held;
  }

  /** A longer buffer for stem i (the song proved longer than its rounded duration). */
  resize(i, frames) {
    const bigger = this.ctx.createBuffer(2, frames, this.rate);
    for (let c = 0; c < 2; c++) bigger.copyToChannel(this.buffers[i].getChannelData(c).subarray(0, this.frames[i]), c);
    this.buffers[i] = bigger;
  }

  /** Once done: buffers of exactly the result's length (a copy only where the guess was off). */
  trim() {
    this.buffers = this.buffers.map((b, i) => {
      if (b.length === this.frames[i]) return b;
      const exact = this.ctx.createBuffer(2, this.frames[i], this.rate);
      for (let c = 0; c < 2; c++) exact.copyToChannel(b.getChannelData(c).subarray(0, this.frames[i]), c);
      return exact;
    });
    return this.stems();
  }
}
