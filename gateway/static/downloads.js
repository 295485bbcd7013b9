// The player's Downloads block: the multi-channel WAV, the ZIP and each stem in any format
// (with the clip choice), the MIDI where the job has it, and "Download my mix" rendered here.

import { fmtTime } from "./views.js";
import { encodeWav } from "./wav.js";
import { el } from "./dom.js";
import { keyedDownload } from "./auth.js";

const FORMATS = [
  ["wav", "WAV 32-bit float"],
  ["wav24", "WAV 24-bit"],
  ["wav16", "WAV 16-bit"],
  ["flac", "FLAC 24-bit"],
  ["flac16", "FLAC 16-bit"],
  ["mp3", "MP3 320 kbit/s"],
];

/** The block's elements for a finished job; say(message) reports a failed keyed download. */
export function downloads(job, analysis, player, say) {
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
  const midi = midiLinks(job, analysis);
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
  for (const a of [zip, result, ...stemLinks, ...midi.all]) keyedDownload(a, say);
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
      const loop = onlyLoop.checked && player.loop;
      const rendered = await player.renderMix(loop ? { start: loop.start, end: loop.end } : {});
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
    el("p", { class: "help", text: "My mix: the stems as you hear them now (mute, solo, volume, pan, speed and pitch, and the click when “click in my mix” is on), rendered in this browser." }),
  ];
}

/**
 * The job's MIDI, where it has one: `all` its links (the whole file first), `stems` the link
 * of each transcribed stem by name (for its row of the stem downloads), `about` the
 * paragraphs for the whole file and who made the notes and the tempo map.
 */
function midiLinks(job, analysis) {
  const href = job.links.midi;
  if (!href) return { all: [], stems: {}, about: [] };
  const { midi, models } = analysis?.track || {};
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
