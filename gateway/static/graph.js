// The player's audio graph, one chain per stem: input (the direct path's fade) -> gain (volume,
// mute, solo) -> stereo panner -> the master bus; and the fades of its parameters.

export const FADE_S = 0.03; // the crossfade between the direct and the stretched path

/** Equal-power fade curve, `up` from 0 to 1 or down from 1 to 0, exact at both ends. */
export function fadeCurve(up, points = 64) {
  const c = Float32Array.from({ length: points }, (_, k) => Math.sin(((up ? k : points - 1 - k) / (points - 1)) * (Math.PI / 2)));
  c[up ? points - 1 : 0] = 1;
  c[up ? 0 : points - 1] = 0;
  return c;
}

/** Sets an AudioParam to v from now on, dropping whatever was scheduled. */
export function setNow(param, v, ctx) {
  param.cancelScheduledValues(0);
  param.setValueAtTime(v, ctx.currentTime);
}

/** Fades an AudioParam over [when, when + FADE_S], cutting short any fade still going on. */
export function fadeAt(param, up, when) {
  if (param.cancelAndHoldAtTime) param.cancelAndHoldAtTime(when);
  else param.cancelScheduledValues(when);
  param.setValueCurveAtTime(fadeCurve(up), when, FADE_S);
}

/** Gain of stem i under mute/solo: muted wins; when any stem is soloed, only soloed ones sound. */
export function audibleGain(mixer, i) {
  const m = mixer[i];
  const anySolo = mixer.some((s) => s.solo);
  return m.mute || (anySolo && !m.solo) ? 0 : m.volume;
}

/** Per stem: input (the direct path's fade) -> GainNode -> StereoPannerNode -> destination,
 *  set from the mixer settings; the stretched path joins at the GainNode. */
export function buildGraph(ctx, destination, mixer) {
  return mixer.map((m, i) => {
    const input = ctx.createGain();
    const gain = ctx.createGain();
    const panner = ctx.createStereoPanner();
    gain.gain.value = audibleGain(mixer, i);
    panner.pan.value = m.pan;
    input.connect(gain).connect(panner).connect(destination);
    return { input, gain, panner };
  });
}
