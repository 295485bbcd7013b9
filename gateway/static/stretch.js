// Speed and pitch for the player: ONE Signalsmith Stretch node (WASM in an AudioWorklet) whose
// channels are all the stems' channels (stem i's left and right are channels 2i and 2i+1), so
// that every stem is stretched by the same processor on the same blocks: sample lock by
// construction. Its output is split back into one stereo pair per stem, into that stem's gain.
// The node holds only a window of the song: fed ahead of the playhead, dropped behind it (a
// loop region is fed whole). Node input time = song time - `base`.

export const LIBRARY_URL = "/static/vendor/signalsmith-stretch.mjs";
const FEED_CHUNK_S = 2; // song seconds per addBuffers
const FEED_AHEAD_S = 8; // song seconds held ahead of the playhead (1.5x speed: 5.3 s of time)
const KEEP_BEHIND_S = 1; // song seconds kept behind it (the STFT reads some history)
const PRE_ROLL_S = 0.25; // song seconds fed before a start, so the first block has its history
const LOOP_PAD_S = 0.25; // song seconds fed around a loop, read by the STFT across the seam

// signalsmith-stretch 1.3.2 reads wrongly from any but the last of several added buffers: its
// copy loop moves on by the samples it copied, not to the buffer's end, and the worklet throws
// (silence from then on). Feeding in windows needs several buffers, so the page loads the
// library with that one line fixed (and refuses a file where the line is not found).
const BUGGY_LINE = "audioSamples += count;\n";
const FIXED_LINE = "audioSamples = bufferEnd; inputSamples += count;\n";

let library = null;

async function fixedLibrary() {
  const r = await fetch(LIBRARY_URL);
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    throw new Error(body.error?.message || `HTTP ${r.status}`);
  }
  const text = await r.text();
  if (text.split(BUGGY_LINE).length !== 2) throw new Error("not the signalsmith-stretch 1.3.2 the page expects");
  const url = URL.createObjectURL(new Blob([text.replace(BUGGY_LINE, FIXED_LINE)], { type: "text/javascript" }));
  try {
    return (await import(url)).default;
  } finally {
    URL.revokeObjectURL(url);
  }
}

/** The library's factory, loaded once (the gateway serves it from node_modules). */
export function loadLibrary() {
  library ??= fixedLibrary().catch((e) => {
    library = null;
    throw new Error(`speed and pitch are unavailable: the library did not load (${e.message})`);
  });
  return library;
}

export class StretchBus {
  /**
   * @param {BaseAudioContext} ctx
   * @param {AudioNode[]} destinations one per stem, each takes a stereo input
   */
  static async create(ctx, destinations) {
    const factory = await loadLibrary();
    const channels = 2 * destinations.length;
    // One input, left unconnected: the library reads the input's channel list even while
    // inactive, and with no input at all its worklet throws (and is silent from then on).
    const node = await factory(ctx, { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [channels] });
    return new StretchBus(ctx, node, destinations, await node.latency());
  }

  constructor(ctx, node, destinations, latency) {
    this.ctx = ctx;
    this.node = node;
    this.latency = latency; // s: changes scheduled at least this far ahead land exactly
    this.rate = ctx.sampleRate;
    const channels = 2 * destinations.length;
    // The fade of the whole bus (the switch to and from the direct path), before the split.
    this.fade = ctx.createGain();
    this.fade.channelCount = channels;
    this.fade.channelCountMode = "explicit";
    this.fade.channelInterpretation = "discrete";
    this.fade.gain.value = 0;
    this.splitter = ctx.createChannelSplitter(channels);
    this.mergers = destinations.map((dest, i) => {
      const merger = ctx.createChannelMerger(2);
      this.splitter.connect(merger, 2 * i, 0);
      this.splitter.connect(merger, 2 * i + 1, 1);
      merger.connect(dest);
      return merger;
    });
    node.connect(this.fade).connect(this.splitter);
    this.base = 0; // song time of the node's input time 0
    this.fedEnd = 0; // song time up to which the node holds the song
    this.active = false;
  }

  /**
   * Drops what the node holds and feeds it from `from` (song s), up to `until` at most: the
   * loop region whole (with a pad each side), or a window ahead of `from`.
   * @param {AudioBuffer[]} buffers the stems, stereo
   */
  reset(buffers, from, until, loop = null) {
    this.node.dropBuffers();
    const start = loop ? Math.max(0, loop.start - LOOP_PAD_S) : Math.max(0, from - PRE_ROLL_S);
    this.base = Math.round(start * this.rate) / this.rate;
    this.fedEnd = this.base;
    this.loop = loop;
    return this.feed(buffers, loop ? Math.min(until, loop.end + LOOP_PAD_S) : Math.min(until, from + FEED_AHEAD_S));
  }

  /** Feeds the node the stems from where it stopped up to song time `to`, in chunks.
   *  @returns {Promise} settled when the node holds them */
  feed(buffers, to) {
    const r = this.rate;
    const length = buffers[0].length;
    let first = Math.round(this.fedEnd * r);
    const last = Math.min(length, Math.round(to * r));
    let held = Promise.resolve();
    while (first < last) {
      const end = Math.min(last, first + FEED_CHUNK_S * r);
      const planes = buffers.flatMap((b) => [0, 1].map((c) => b.getChannelData(c).slice(first, end)));
      held = this.node.addBuffers(planes, planes.map((p) => p.buffer)); // transferred, not copied
      first = end;
    }
    this.fedEnd = Math.max(this.fedEnd, last / r);
    return held;
  }

  /** While playing at song time `at`: feeds ahead (to `ready` at most), drops behind. */
  pump(buffers, at, ready) {
    if (this.loop) return; // the region is held whole
    if (this.fedEnd < Math.min(ready, at + FEED_AHEAD_S / 2)) this.feed(buffers, Math.min(ready, at + FEED_AHEAD_S));
    const behind = at - KEEP_BEHIND_S - this.base;
    if (behind > FEED_CHUNK_S) this.node.dropBuffers(behind);
  }

  /**
   * From context time `when` the node plays song time `at` on at `speed` and `semitones`.
   * Replaces any change scheduled after now (the library keeps one timeline).
   */
  play(when, at, speed, semitones) {
    const loop = this.loop
      ? { loopStart: this.loop.start - this.base, loopEnd: this.loop.end - this.base }
      : { loopStart: 0, loopEnd: 0 };
    this.active = true;
    return this.node.schedule({ output: when, active: true, input: at - this.base, rate: speed, semitones, ...loop });
  }

  /** Silent from `when` (default now); what it holds is dropped unless `keep`. */
  stop(when = this.ctx.currentTime, keep = false) {
    this.node.schedule({ output: when, active: false });
    this.active = false;
    if (!keep) {
      this.node.dropBuffers();
      this.fedEnd = this.base;
    }
  }

  dispose() {
    this.node.disconnect();
    this.fade.disconnect();
    this.splitter.disconnect();
    for (const m of this.mergers) m.disconnect();
  }
}

/**
 * The stems from `first` to `last` (song s) rendered at `speed` and `semitones` into an
 * OfflineAudioContext's `destinations` (one per stem), fed in windows while it renders.
 * @returns {Promise<AudioBuffer>} the rendering
 */
export async function renderStretched(offline, destinations, buffers, { first, last, speed, semitones }) {
  const bus = await StretchBus.create(offline, destinations);
  bus.fade.gain.value = 1;
  await bus.reset(buffers, first, last);
  await bus.play(0, first, speed, semitones);
  // Suspend every few seconds of output to feed ahead and drop behind: bounded memory.
  const step = FEED_AHEAD_S / 2 / speed;
  for (let t = step; t < offline.length / offline.sampleRate; t += step) {
    const at = first + t * speed;
    offline.suspend(Math.round(t * offline.sampleRate) / offline.sampleRate).then(() => {
      bus.pump(buffers, at, last);
      offline.resume();
    });
  }
  return offline.startRendering();
}
