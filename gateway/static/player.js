// The transport and mixer: every stem plays from one AudioContext, all sources started at the
// same context time with the same offset, so the stems stay sample-locked. No DOM here.
// While a job still separates, only the first `ready` seconds of the buffers are final: playback
// stops there (and waits), and when more arrives the sources are swapped for new ones at one
// future sample, continuing the same timeline, so the joins are gapless.
// Speed and pitch: at speed 1 and 0 semitones the stems play from buffer sources (exact); any
// other setting plays them through one Signalsmith Stretch node (stretch.js), and a change
// between the two paths is an equal-power crossfade scheduled ahead. The transport's timeline
// is a segment (song time `offset` at context time `startedAt`, then `segSpeed` song seconds
// per second), and `prev`, the segment still heard until `startedAt` after a change.

import { FADE_S, audibleGain, buildGraph, fadeAt, setNow } from "./graph.js";
import { StretchBus, renderStretched } from "./stretch.js";

export { audibleGain };

const START_LEAD_S = 0.05; // sources start this far ahead so every start() lands on one time
const STRETCH_MARGIN_S = 0.05; // a change to the stretch node is scheduled its latency + this ahead
const PUMP_MS = 50; // while playing: feeds the stretch node, detects its end, schedules clicks
const PASS_LEAD_S = 0.4; // a count-in before each loop pass: the next pass is set up this early
export const SPEED_MIN = 0.5;
export const SPEED_MAX = 1.5;
export const SEMITONES_MAX = 12;

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

export class Player {
  /**
   * @param {AudioContext} ctx
   * @param {{name: string, buffer: AudioBuffer}[]} stems all of one length and rate
   * @param {() => void} onChange called when play state, position jumps or the mixer change
   * @param {number} [ready] seconds from the start that are final (default: all of them)
   */
  constructor(ctx, stems, onChange = () => {}, ready = undefined) {
    this.ctx = ctx;
    this.stems = stems;
    this.onChange = onChange;
    this.rate = stems.length ? stems[0].buffer.sampleRate : ctx.sampleRate;
    this.duration = stems.length ? stems[0].buffer.duration : 0;
    this.ready = Math.min(this.duration, ready ?? this.duration);
    this.waiting = false; // playing, but the playhead reached `ready` and waits for more
    this.mixer = stems.map((s) => ({ name: s.name, volume: 1, pan: 0, mute: false, solo: false }));
    this.master = ctx.createGain();
    this.master.connect(ctx.destination);
    this.nodes = buildGraph(ctx, this.master, this.mixer);
    this.sources = [];
    this.playing = false;
    this.offset = 0; // position (s) while paused; the start offset while playing
    this.startedAt = 0; // ctx time at which the sources started
    this.loop = null; // {start, end} in seconds, or null
    this.loopOn = false;
    this.speed = 1; // song seconds per second, pitch kept
    this.semitones = 0; // pitch shift, fractional for cents
    this.segSpeed = 1; // the speed of the segment from startedAt
    this.prev = null; // {offset, startedAt, segSpeed, until}: the segment heard before startedAt
    this.path = "direct"; // which path sounds: "direct" (buffer sources) or "stretch"
    this.bus = null; // the StretchBus, made on the first speed or pitch change
    this.endsAt = Infinity; // stretched without a loop: context time at which `ready` is reached
    this.metronome = null; // a Metronome (metronome.js) when the practice controls made one
    this.pumpTimer = 0;
  }

  /** The transport's position in seconds, from the context's clock. */
  position(at = this.ctx.currentTime) {
    if (!this.playing || this.waiting) return this.offset;
    if (this.prev && at < this.startedAt) {
      // Between two loop passes (a count-in): already at the next pass's start.
      return at >= this.prev.until ? this.offset : this.songTime(this.prev, at);
    }
    return this.songTime(this, at);
  }

  /** Song time heard at context time `at` on segment `seg` (looped, and up to `ready`). */
  songTime(seg, at) {
    const t = seg.offset + Math.max(0, at - seg.startedAt) * seg.segSpeed;
    if (this.looping() && t >= this.loop.end) {
      const len = this.loop.end - this.loop.start;
      return this.loop.start + ((t - this.loop.start) % len);
    }
    return Math.min(t, this.ready);
  }

  /** At 1x and 0 semitones the stems play from their buffers, bit-exact. */
  neutral() {
    return this.speed === 1 && this.semitones === 0;
  }

  /** Whether playback starts stretched: a non-neutral setting and the node loaded. */
  stretched() {
    return !this.neutral() && this.bus !== null;
  }

  /** Whether part of the song is not final yet. */
  partial() {
    return this.ready < this.duration;
  }

  /** Seconds to the next sample frame boundary at or after t: every start and offset on the
   *  frame grid, so a swap of sources at a shared time reads the very next sample. */
  frameCeil(t) {
    return Math.ceil(t * this.rate - 1e-6) / this.rate;
  }

  looping() {
    return this.loopOn && this.loop !== null && this.loop.end - this.loop.start > 0.01;
  }

  /** Plays from the position; countIn: a bar of clicks first, when the metronome asks for it. */
  async play({ countIn = true } = {}) {
    if (this.playing || !this.stems.length) return;
    if (this.ctx.state !== "running") await this.ctx.resume();
    if (this.playing) return; // a second play() while the context resumed
    let offset = this.offset >= this.duration ? 0 : this.offset;
    if (this.looping() && (offset < this.loop.start || offset >= this.loop.end)) {
      offset = this.loop.start;
    }
    offset = Math.round(offset * this.rate) / this.rate;
    this.playing = true;
    this.offset = offset;
    this.prev = null;
    if (offset >= this.ready) {
      this.waiting = true; // nothing final here yet: extend() starts the sources
    } else {
      let when = this.frameCeil(this.ctx.currentTime + this.lead(this.stretched()));
      if (countIn && this.metronome) when = this.frameCeil(when + this.metronome.countIn(when, this.speed));
      this.startAt(when, offset, this.stretched());
    }
    this.startPump();
    this.onChange();
  }

  /** How far ahead a start on the path lands exactly. */
  lead(stretched) {
    return stretched ? this.bus.latency + STRETCH_MARGIN_S : START_LEAD_S;
  }

  /** Starts the path from context time `when` at song time `offset` (nothing else sounds). */
  startAt(when, offset, stretched) {
    this.startedAt = when;
    this.offset = offset;
    this.segSpeed = stretched ? this.speed : 1;
    this.path = stretched ? "stretch" : "direct";
    for (const n of this.nodes) setNow(n.input.gain, stretched ? 0 : 1, this.ctx);
    if (this.bus) setNow(this.bus.fade.gain, stretched ? 1 : 0, this.ctx);
    if (stretched) {
      this.bus.reset(this.buffers(), offset, this.ready, this.looping() ? this.loop : null);
      this.bus.play(when, offset, this.speed, this.semitones);
      this.updateEnd();
    } else {
      this.sources = this.startSources(when, offset);
    }
  }

  buffers() {
    return this.stems.map((s) => s.buffer);
  }

  /** Stretched without a loop: where the song reaches `ready` (held there, or the end). */
  updateEnd() {
    this.endsAt = this.path === "stretch" && !this.looping()
      ? this.startedAt + (this.ready - this.offset) / this.segSpeed
      : Infinity;
  }

  startPump() {
    if (!this.pumpTimer) this.pumpTimer = setInterval(() => this.pump(), PUMP_MS);
  }

  stopPump() {
    clearInterval(this.pumpTimer);
    this.pumpTimer = 0;
  }

  /** While playing: feeds the stretch node, ends where a stretched song ends, clicks. */
  pump() {
    if (!this.playing) return this.stopPump();
    const now = this.ctx.currentTime;
    if (this.retimeLater && now >= this.startedAt) {
      this.retimeLater = false;
      this.retimePlaying();
    }
    if (!this.waiting && this.looping() && this.metronome?.everyPass) this.nextPass(now);
    this.metronome?.pump(now);
    if (this.path !== "stretch" || this.waiting) return;
    if (now >= this.endsAt) return this.reachedReady();
    this.bus.pump(this.buffers(), this.position(now), this.ready);
  }

  /**
   * A count-in before each loop pass: shortly before this pass ends, the next one is set up
   * to start a bar of clicks after it (this pass stops at the loop's end; its own sources or
   * the node's native loop would go on).
   */
  nextPass(now) {
    const end = this.startedAt + (this.loop.end - this.offset) / this.segSpeed;
    if (now + PASS_LEAD_S < end || now < this.startedAt) return;
    this.metronome.retimed(end);
    const when = this.frameCeil(end + this.metronome.countIn(end, this.segSpeed, true));
    if (this.path === "stretch") {
      this.bus.fade.gain.setValueAtTime(0, end);
      this.bus.fade.gain.setValueAtTime(1, when);
      this.bus.play(when, this.loop.start, this.segSpeed, this.semitones);
    } else {
      for (const src of this.sources) {
        src.onended = () => src.disconnect();
        src.stop(end);
      }
      this.sources = this.startSources(when, this.loop.start);
    }
    this.prev = { ...this.segment(), until: end };
    this.offset = this.loop.start;
    this.startedAt = when;
  }

  /** The playhead reached what is final: hold there (more is coming) or end the song. */
  reachedReady() {
    this.stopPaths();
    if (this.partial()) {
      this.waiting = true;
      this.offset = this.ready;
    } else {
      this.playing = false;
      this.offset = 0;
    }
    this.onChange();
  }

  /** Sets the speed (0.5-1.5, pitch kept), live: see retime. */
  setSpeed(speed) {
    this.speed = clamp(Number(speed), SPEED_MIN, SPEED_MAX);
    return this.retime();
  }

  /** Sets the pitch shift in semitones (-12..12, fractions are cents), live: see retime. */
  setPitch(semitones) {
    this.semitones = clamp(Number(semitones), -SEMITONES_MAX, SEMITONES_MAX);
    return this.retime();
  }

  /** Loads the stretch node once (the library is fetched from the gateway). */
  loadStretch() {
    this.busLoading ??= StretchBus.create(this.ctx, this.nodes.map((n) => n.gain)).then((bus) => {
      this.bus = bus;
      return bus;
    }, (e) => {
      this.busLoading = null;
      throw e;
    });
    return this.busLoading;
  }

  /** The new speed and pitch take effect: from a time a little ahead while playing, with no
   *  gap (the stretched node changes on its own; between paths, a crossfade). */
  async retime() {
    if (!this.neutral() && !this.bus) {
      try {
        await this.loadStretch();
      } catch (e) {
        Object.assign(this, { speed: 1, semitones: 0 }); // it plays as it did: say so
        this.onChange();
        throw e;
      }
    }
    if (this.playing && !this.waiting) this.retimePlaying();
    this.onChange();
  }

  retimePlaying() {
    const now = this.ctx.currentTime;
    const want = this.stretched();
    if (this.prev && this.prev.until < Infinity && now < this.startedAt) {
      this.retimeLater = true; // between two loop passes: once the next one started
      return;
    }
    if (now < this.startedAt && !this.prev) {
      // Not started yet (the lead or a count-in): the same start, on the path now wanted.
      const when = Math.max(this.startedAt, this.frameCeil(now + this.lead(want)));
      this.stopPaths({ clicks: false }); // a count-in goes on
      return this.startAt(when, this.offset, want);
    }
    // A change still ahead is replaced, so the timeline goes on from the segment heard now.
    const base = this.prev && now < this.startedAt ? this.prev : this.segment();
    const when = this.frameCeil(now + this.lead(want));
    const at = Math.round(this.songTime(base, when) * this.rate) / this.rate;
    if (want && this.path === "stretch") {
      this.bus.play(when, at, this.speed, this.semitones);
    } else if (want) {
      this.bus.reset(this.buffers(), at, this.ready, this.looping() ? this.loop : null);
      this.bus.play(when, at, this.speed, this.semitones);
      this.crossfade(when, true);
    } else if (this.path === "stretch") {
      this.sources = this.startSources(when, at);
      this.crossfade(when, false);
      this.bus.stop(when + FADE_S, true);
    } else {
      return; // direct and neutral: nothing changes
    }
    this.path = want ? "stretch" : "direct";
    this.prev = base;
    this.offset = at;
    this.startedAt = when;
    this.segSpeed = want ? this.speed : 1;
    this.updateEnd();
    this.metronome?.retimed(when);
  }

  segment() {
    return { offset: this.offset, startedAt: this.startedAt, segSpeed: this.segSpeed, until: Infinity };
  }

  /** Equal-power crossfade at `when` between the paths; toStretch: from direct to stretched. */
  crossfade(when, toStretch) {
    for (const n of this.nodes) fadeAt(n.input.gain, !toStretch, when);
    fadeAt(this.bus.fade.gain, toStretch, when);
    if (toStretch) {
      const old = this.sources;
      this.sources = [];
      for (const src of old) {
        src.onended = () => src.disconnect();
        src.stop(when + FADE_S);
      }
    }
  }

  /** One source per stem from `when` at buffer time `offset`; without a loop they stop at
   *  `ready`, where the player waits for more (or ends, when the song is complete). */
  startSources(when, offset) {
    const sources = this.stems.map((s, i) => {
      const src = this.ctx.createBufferSource();
      src.buffer = s.buffer;
      if (this.looping()) {
        src.loop = true;
        src.loopStart = this.loop.start;
        src.loopEnd = this.loop.end;
      }
      src.connect(this.nodes[i].input);
      src.start(when, offset);
      if (!this.looping() && this.partial()) src.stop(when + (this.ready - offset));
      return src;
    });
    sources[0].onended = () => {
      if (this.sources !== sources) return; // stopped by pause, seek or a swap, not by the end
      this.sources = [];
      if (this.partial()) {
        this.waiting = true; // reached the end of what is final: hold there
        this.offset = this.ready;
      } else {
        this.playing = false;
        this.offset = 0;
      }
      this.onChange();
    };
    return sources;
  }

  /**
   * More of the song is final (ready seconds), or the buffers grew (stems: the new ones, same
   * names and order). Playing sources are replaced at one future frame by sources that read
   * the same timeline on; a player that waited starts again where it stopped.
   */
  extend(ready, stems = null) {
    const replaced = Boolean(stems) && stems.some((s, i) => s.buffer !== this.stems[i].buffer);
    if (replaced) {
      stems.forEach((s, i) => { this.stems[i].buffer = s.buffer; });
      this.duration = this.stems[0].buffer.duration;
    }
    const before = this.ready; // where the playing sources stop
    this.ready = Math.min(this.duration, ready);
    if (this.loop && this.loop.end > this.ready) this.loop.end = this.ready;
    if (!this.playing) {
      this.offset = Math.min(this.offset, this.ready);
      return this.onChange();
    }
    if (this.looping() && !replaced && !this.waiting) return this.onChange(); // the loop lies in what was final
    if (this.path === "stretch" && !this.waiting) {
      // The node reads the stems' buffers as it is fed: it plays on; only the end moves.
      this.updateEnd();
      return this.onChange();
    }
    if (this.waiting && this.stretched()) {
      this.waiting = false;
      this.prev = null;
      this.startAt(this.frameCeil(this.ctx.currentTime + this.lead(true)), this.offset, true);
      return this.onChange();
    }
    const when = this.frameCeil(this.ctx.currentTime + START_LEAD_S);
    if (!this.waiting) {
      // The swap: old sources stop and new ones start on the same frame, reading on from there.
      const frames = Math.round((when - this.startedAt) * this.rate);
      let at = this.offset + frames / this.rate;
      if (this.looping() && at >= this.loop.end) {
        const len = this.loop.end - this.loop.start;
        at = this.loop.start + ((at - this.loop.start) % len);
      }
      if (at < before) {
        const old = this.sources;
        this.prev = this.segment(); // heard until `when`
        this.sources = this.startSources(when, at);
        this.offset = at;
        this.startedAt = when;
        for (const src of old) {
          src.onended = () => src.disconnect();
          src.stop(when);
        }
        return this.onChange();
      }
      // The old sources stop before `when` (their end may not be announced yet): on from there.
      this.stopSources();
      this.waiting = true;
      this.offset = before;
    }
    if (this.offset < this.ready) {
      this.waiting = false;
      this.prev = null;
      this.startAt(when, this.offset, false);
    }
    this.onChange();
  }

  pause() {
    if (!this.playing) return;
    const at = this.position();
    this.stopPaths();
    this.playing = false;
    this.waiting = false;
    this.offset = at;
    this.onChange();
  }

  toggle() {
    return this.playing ? this.pause() : this.play();
  }

  /** Jumps to t seconds (clamped to what is final of the song), playing on from there when
   *  playing; returns where it went. */
  seek(t) {
    const to = Math.max(0, Math.min(this.ready, t));
    if (this.playing) {
      this.stopPaths();
      this.playing = false;
      this.waiting = false;
      this.offset = to;
      this.play({ countIn: false });
    } else {
      this.offset = to;
      this.onChange();
    }
    return to;
  }

  /** Sets (or clears, with null) the loop region; playing sources restart to take it. */
  setLoop(region, on = this.loopOn) {
    if (region) region = { start: region.start, end: Math.min(region.end, this.ready) };
    this.loop = region && region.end > region.start ? region : null;
    this.loopOn = on && this.loop !== null;
    this.restartIfPlaying();
  }

  setLoopOn(on) {
    this.loopOn = on && this.loop !== null;
    this.restartIfPlaying();
  }

  /** Changes one stem's setting: key is volume, pan, mute or solo. */
  set(i, key, value) {
    this.mixer[i][key] = value;
    const now = this.ctx.currentTime;
    this.mixer.forEach((m, j) => {
      // A short ramp, not a jump: a gain step mid-waveform clicks.
      this.nodes[j].gain.gain.setTargetAtTime(audibleGain(this.mixer, j), now, 0.01);
      this.nodes[j].panner.pan.setTargetAtTime(m.pan, now, 0.01);
    });
    this.onChange();
  }

  /**
   * The mix as the mixer stands (or with `opts` changed), rendered offline through the same
   * graph. opts: mute / solo: a list of stem names or "all"; mixer: {name: {volume, pan, mute,
   * solo}}; start, end: seconds (default the whole song); speed, semitones (default the
   * player's); click: with the metronome's clicks (default: its "in my mix" choice).
   * @returns {Promise<AudioBuffer>} stereo, at the stems' sample rate, (end - start) / speed long
   */
  async renderMix(opts = {}) {
    const mixer = this.mixer.map((m) => ({ ...m, ...(opts.mixer || {})[m.name] }));
    for (const key of ["mute", "solo"]) {
      const names = opts[key];
      if (names === undefined) continue;
      for (const m of mixer) m[key] = names === "all" || names.includes(m.name);
    }
    const rate = this.stems[0].buffer.sampleRate;
    const first = Math.round((opts.start ?? 0) * rate);
    const last = Math.min(this.stems[0].buffer.length, Math.round((opts.end ?? this.duration) * rate));
    const frames = Math.max(1, last - first);
    const speed = clamp(opts.speed ?? this.speed, SPEED_MIN, SPEED_MAX);
    const semitones = clamp(opts.semitones ?? this.semitones, -SEMITONES_MAX, SEMITONES_MAX);
    const neutral = speed === 1 && semitones === 0;
    const offline = new OfflineAudioContext(2, neutral ? frames : Math.max(1, Math.round(frames / speed)), rate);
    const nodes = buildGraph(offline, offline.destination, mixer);
    if (opts.click ?? this.metronome?.inMix) {
      this.metronome?.renderInto(offline, offline.destination, first / rate, last / rate, speed);
    }
    if (!neutral) {
      return renderStretched(offline, nodes.map((n) => n.gain), this.buffers(),
        { first: first / rate, last: last / rate, speed, semitones });
    }
    this.stems.forEach((s, i) => {
      const src = offline.createBufferSource();
      src.buffer = s.buffer;
      src.connect(nodes[i].input);
      src.start(0, first / rate);
    });
    return offline.startRendering();
  }

  restartIfPlaying() {
    if (this.playing) this.seek(this.position());
    else this.onChange();
  }

  /** Silences both paths at once: the sources stopped, the stretch node stopped and emptied;
   *  and the clicks still to come, unless `clicks` is false. */
  stopPaths({ clicks = true } = {}) {
    this.stopSources();
    if (this.bus) {
      setNow(this.bus.fade.gain, 0, this.ctx);
      // A moment in the past: the node takes it at once and keeps it as its current state.
      this.bus.stop(Math.max(0, this.ctx.currentTime - 0.01));
    }
    this.endsAt = Infinity;
    if (clicks) this.metronome?.silence();
  }

  stopSources() {
    const sources = this.sources;
    this.sources = [];
    for (const src of sources) {
      src.onended = null;
      try {
        src.stop();
      } catch {
        // already stopped
      }
      src.disconnect();
    }
  }

  dispose() {
    this.stopPaths();
    this.stopPump();
    this.bus?.dispose();
    this.playing = false;
    this.waiting = false;
    for (const n of this.nodes) {
      n.input.disconnect();
      n.gain.disconnect();
      n.panner.disconnect();
    }
    this.master.disconnect();
  }
}
