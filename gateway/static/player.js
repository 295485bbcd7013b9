// The transport and mixer: every stem plays from one AudioContext, all sources started at the
// same context time with the same offset, so the stems stay sample-locked. No DOM here.
// While a job still separates, only the first `ready` seconds of the buffers are final: playback
// stops there (and waits), and when more arrives the sources are swapped for new ones at one
// future sample, continuing the same timeline, so the joins are gapless.

const START_LEAD_S = 0.05; // sources start this far ahead so every start() lands on one time

/** Gain of stem i under mute/solo: muted wins; when any stem is soloed, only soloed ones sound. */
export function audibleGain(mixer, i) {
  const m = mixer[i];
  const anySolo = mixer.some((s) => s.solo);
  return m.mute || (anySolo && !m.solo) ? 0 : m.volume;
}

/** Per stem: GainNode -> StereoPannerNode -> destination, set from the mixer settings. */
function buildGraph(ctx, destination, mixer) {
  return mixer.map((m, i) => {
    const gain = ctx.createGain();
    const panner = ctx.createStereoPanner();
    gain.gain.value = audibleGain(mixer, i);
    panner.pan.value = m.pan;
    gain.connect(panner).connect(destination);
    return { gain, panner };
  });
}

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
  }

  /** The transport's position in seconds, from the context's clock. */
  position() {
    if (!this.playing || this.waiting) return this.offset;
    const t = this.offset + Math.max(0, this.ctx.currentTime - this.startedAt);
    if (this.looping() && t >= this.loop.end) {
      const len = this.loop.end - this.loop.start;
      return this.loop.start + ((t - this.loop.start) % len);
    }
    return Math.min(t, this.ready);
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

  async play() {
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
    if (offset >= this.ready) {
      this.waiting = true; // nothing final here yet: extend() starts the sources
    } else {
      const when = this.frameCeil(this.ctx.currentTime + START_LEAD_S);
      this.startedAt = when;
      this.sources = this.startSources(when, offset);
    }
    this.onChange();
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
      src.connect(this.nodes[i].gain);
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
      this.startedAt = when;
      this.sources = this.startSources(when, this.offset);
    }
    this.onChange();
  }

  pause() {
    if (!this.playing) return;
    const at = this.position();
    this.stopSources();
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
      this.stopSources();
      this.playing = false;
      this.waiting = false;
      this.offset = to;
      this.play();
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
   * solo}}; start, end: seconds (default the whole song).
   * @returns {Promise<AudioBuffer>} stereo, at the stems' sample rate
   */
  renderMix(opts = {}) {
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
    const offline = new OfflineAudioContext(2, frames, rate);
    const nodes = buildGraph(offline, offline.destination, mixer);
    this.stems.forEach((s, i) => {
      const src = offline.createBufferSource();
      src.buffer = s.buffer;
      src.connect(nodes[i].gain);
      src.start(0, first / rate);
    });
    return offline.startRendering();
  }

  restartIfPlaying() {
    if (this.playing) this.seek(this.position());
    else this.onChange();
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
    this.stopSources();
    this.playing = false;
    this.waiting = false;
    for (const n of this.nodes) {
      n.gain.disconnect();
      n.panner.disconnect();
    }
    this.master.disconnect();
  }
}
