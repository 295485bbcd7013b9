// The click: a metronome on the analysis' beat grid, downbeats accented, following the
// player's timeline (beat k clicks at the context time at which song time beats_s[k] is heard,
// at any speed, across loop passes), and a count-in of one bar before playback starts.
// Clicks are synthesized once and scheduled on the context clock a little ahead (a lookahead
// scheduler, pumped by the player), never after the fact.

const LOOKAHEAD_S = 0.3; // clicks are scheduled this far ahead of the context clock
const CLICK_S = 0.03; // one click: a 30 ms enveloped sine
const DECAY_S = 0.006;
const ATTACK_S = 0.001;
const ACCENT = { hz: 1760, gain: 1 }; // the downbeat: higher and louder
const BEAT = { hz: 1320, gain: 0.6 };
const DOWNBEAT_TOLERANCE_S = 0.02;
const DEFAULT_BEATS_PER_BAR = 4;

/** A click as an AudioBuffer (mono): a sine burst, 1 ms attack, exponential decay. */
export function clickBuffer(ctx, { hz, gain }) {
  const rate = ctx.sampleRate;
  const buffer = ctx.createBuffer(1, Math.round(CLICK_S * rate), rate);
  const x = buffer.getChannelData(0);
  for (let i = 0; i < x.length; i++) {
    const t = i / rate;
    x[i] = gain * Math.min(1, t / ATTACK_S) * Math.exp(-t / DECAY_S) * Math.sin(2 * Math.PI * hz * t);
  }
  return buffer;
}

/**
 * The analysis' beat grid: beats (s, ascending), which of them are downbeats, beats a bar, the
 * tempo (bpm); null without beats.
 */
export function beatGrid(analysis) {
  const track = analysis?.track;
  const beats = track?.beats_s || [];
  if (!beats.length) return null;
  const downs = track.downbeats_s || [];
  const accents = beats.map((b) => downs.some((d) => Math.abs(d - b) < DOWNBEAT_TOLERANCE_S));
  let tempo = track.tempo_bpm;
  if (!(tempo > 0) && beats.length > 1) tempo = (60 * (beats.length - 1)) / (beats.at(-1) - beats[0]);
  return { beats, accents, beatsPerBar: track.time_signature || DEFAULT_BEATS_PER_BAR, tempo: tempo || 120 };
}

/** The first index k with beats[k] >= t (beats ascending). */
function firstAtOrAfter(beats, t) {
  let lo = 0;
  let hi = beats.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (beats[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class Metronome {
  /**
   * @param {import("./player.js").Player} player
   * @param {ReturnType<typeof beatGrid>} grid
   */
  constructor(player, grid) {
    this.player = player;
    this.grid = grid;
    this.on = false;
    this.volume = 0.5;
    this.countInOn = false; // a bar of clicks before playback starts
    this.everyPass = false; // and before each loop pass
    this.inMix = false; // "my mix" holds the clicks
    const ctx = player.ctx;
    this.out = ctx.createGain();
    this.out.gain.value = this.volume;
    this.out.connect(player.master);
    this.sounds = { accent: clickBuffer(ctx, ACCENT), beat: clickBuffer(ctx, BEAT) };
    this.scheduled = []; // {src, when}: clicks handed to the context
    this.until = 0; // context time up to which the beats are scheduled
  }

  setOn(on) {
    this.on = on;
    if (!on) this.silence();
  }

  setVolume(volume) {
    this.volume = volume;
    this.out.gain.setTargetAtTime(volume, this.player.ctx.currentTime, 0.01);
  }

  /** Seconds of one beat at the song's tempo and `speed`. */
  beatSeconds(speed) {
    return 60 / this.grid.tempo / speed;
  }

  /** Playback is to start at `when`: schedules a bar of clicks before it (when asked for, or
   *  `always`) and returns how much later the song starts (0 without a count-in). */
  countIn(when, speed, always = false) {
    const asked = this.countInOn || (this.everyPass && this.player.looping());
    if (!(asked || always) || !this.grid) return 0;
    const beat = this.beatSeconds(speed);
    for (let k = 0; k < this.grid.beatsPerBar; k++) this.click(when + k * beat, k === 0);
    return this.grid.beatsPerBar * beat;
  }

  click(when, accent, ctx = this.player.ctx, destination = this.out) {
    const src = ctx.createBufferSource();
    src.buffer = accent ? this.sounds.accent : this.sounds.beat;
    src.connect(destination);
    src.start(when);
    if (destination === this.out) {
      this.scheduled.push({ src, when });
      src.onended = () => {
        src.disconnect();
        this.scheduled = this.scheduled.filter((c) => c.src !== src);
      };
    }
  }

  /** Called every few tens of ms while playing: schedules the beats heard in the next moment. */
  pump(now) {
    if (!this.on || !this.grid) return;
    const from = Math.max(this.until, now);
    const to = now + LOOKAHEAD_S;
    for (const { when, accent } of this.beatsBetween(from, to)) this.click(when, accent);
    this.until = to;
  }

  /**
   * The beats heard in context time [a, b), on the player's timeline: the segment before its
   * last change up to `startedAt`, the current one from there.
   * @returns {{when: number, accent: boolean}[]}
   */
  beatsBetween(a, b) {
    const p = this.player;
    const out = [];
    if (p.prev && a < p.startedAt) this.beatsOn(p.prev, a, Math.min(b, p.startedAt, p.prev.until), out);
    this.beatsOn(p, Math.max(a, p.startedAt), b, out);
    return out;
  }

  beatsOn(seg, a, b, out) {
    if (b <= a) return;
    const p = this.player;
    const { beats, accents } = this.grid;
    const ua = seg.offset + (a - seg.startedAt) * seg.segSpeed; // song time, loops unrolled
    const ub = seg.offset + (b - seg.startedAt) * seg.segSpeed;
    const at = (u, k) => out.push({ when: seg.startedAt + (u - seg.offset) / seg.segSpeed, accent: accents[k] });
    if (!p.looping()) {
      for (let k = firstAtOrAfter(beats, ua); k < beats.length && beats[k] < Math.min(ub, p.ready); k++) at(beats[k], k);
      return;
    }
    const { start, end } = p.loop;
    const len = end - start;
    const first = firstAtOrAfter(beats, start);
    for (let pass = Math.max(0, Math.floor((ua - start) / len)); start + pass * len < ub; pass++) {
      for (let k = first; k < beats.length && beats[k] < end; k++) {
        const u = beats[k] + pass * len;
        if (u >= ua && u < ub) at(u, k);
      }
    }
  }

  /** The timeline changes from `when` on: the clicks scheduled from then are taken back. */
  retimed(when) {
    this.takeBack(when);
    this.until = Math.min(this.until, when);
  }

  /** Playback stopped: every click still to come is taken back. */
  silence() {
    this.takeBack(0);
    this.until = 0;
  }

  takeBack(from) {
    const now = this.player.ctx.currentTime;
    for (const c of this.scheduled) {
      if (c.when >= from && c.when > now) {
        c.src.onended = null;
        c.src.stop();
        c.src.disconnect();
      }
    }
    this.scheduled = this.scheduled.filter((c) => !(c.when >= from && c.when > now));
  }

  /** The clicks of song time [start, end) at `speed` into an OfflineAudioContext from 0 s. */
  renderInto(offline, destination, start, end, speed) {
    if (!this.grid) return;
    const gain = offline.createGain();
    gain.gain.value = this.volume;
    gain.connect(destination);
    const sounds = { accent: clickBuffer(offline, ACCENT), beat: clickBuffer(offline, BEAT) };
    const { beats, accents } = this.grid;
    for (let k = firstAtOrAfter(beats, start); k < beats.length && beats[k] < end; k++) {
      const src = offline.createBufferSource();
      src.buffer = accents[k] ? sounds.accent : sounds.beat;
      src.connect(gain);
      src.start((beats[k] - start) / speed);
    }
  }

  dispose() {
    this.silence();
    this.out.disconnect();
  }
}
