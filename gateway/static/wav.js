// WAV files written in the page: "download my mix" renders the mixer offline and saves it.

/**
 * An AudioBuffer as a RIFF/WAVE file: bits 16 (PCM, clamped to [-1, 1]) or 32 (IEEE float,
 * never clipped). Channels interleaved, little-endian, the buffer's sample rate.
 * @returns {ArrayBuffer}
 */
export function encodeWav(buffer, bits = 16) {
  if (bits !== 16 && bits !== 32) throw new Error(`WAV bits must be 16 or 32, got ${bits}`);
  const channels = buffer.numberOfChannels;
  const frames = buffer.length;
  const float = bits === 32;
  const bytesPerSample = bits / 8;
  const dataBytes = frames * channels * bytesPerSample;
  // Float WAVs carry an 18-byte fmt chunk (cbSize = 0) and a fact chunk, as the format asks.
  const fmtBytes = float ? 18 : 16;
  const factBytes = float ? 12 : 0;
  const headerBytes = 12 + 8 + fmtBytes + factBytes + 8;
  const out = new ArrayBuffer(headerBytes + dataBytes);
  const view = new DataView(out);
  let p = 0;
  const text = (s) => { for (const c of s) view.setUint8(p++, c.charCodeAt(0)); };
  const u32 = (v) => { view.setUint32(p, v, true); p += 4; };
  const u16 = (v) => { view.setUint16(p, v, true); p += 2; };
  text("RIFF"); u32(headerBytes - 8 + dataBytes); text("WAVE");
  text("fmt "); u32(fmtBytes);
  u16(float ? 3 : 1); u16(channels); u32(buffer.sampleRate);
  u32(buffer.sampleRate * channels * bytesPerSample); u16(channels * bytesPerSample); u16(bits);
  if (float) { u16(0); text("fact"); u32(4); u32(frames); }
  text("data"); u32(dataBytes);
  const planes = [];
  for (let c = 0; c < channels; c++) planes.push(buffer.getChannelData(c));
  if (float) {
    // The data starts at byte 58, not a multiple of 4: interleave into an aligned array and
    // copy its bytes (typed arrays use the platform's order, little-endian wherever browsers run).
    const samples = new Float32Array(frames * channels);
    for (let i = 0, k = 0; i < frames; i++) for (let c = 0; c < channels; c++) samples[k++] = planes[c][i];
    new Uint8Array(out, headerBytes).set(new Uint8Array(samples.buffer));
  } else {
    const samples = new Int16Array(out, headerBytes, frames * channels);
    for (let i = 0, k = 0; i < frames; i++) {
      for (let c = 0; c < channels; c++) {
        const v = Math.max(-1, Math.min(1, planes[c][i]));
        samples[k++] = Math.round(v < 0 ? v * 32768 : v * 32767);
      }
    }
  }
  return out;
}
