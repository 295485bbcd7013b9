// Keys and chord names moved by a number of semitones, spelled as the analysis spells them:
// a port of transforms/spelling.py (the Python module is the truth; test_practice_page.py
// checks this one against it for every transposition). The transposed key picks the letters:
// a key's own notes take the letters of its scale, the chords outside it are named as they
// usually are (bII, bIII, bVI, bVII flat, #IV sharp; in minor the raised degrees sharp), and
// names a chord chart avoids (Cb, Fb, E#, B#) fall back to the key's side. Labels stay ASCII
// ("Bb", "F#m"); views.js adds ♭ and ♯ for the eye.

const LETTERS = "CDEFGAB";
const NATURAL_PC = [0, 2, 4, 5, 7, 9, 11]; // pitch class of each letter
const SCALE_STEPS = { major: [0, 2, 4, 5, 7, 9, 11], minor: [0, 2, 3, 5, 7, 8, 10] };
const TONIC_NAMES = {
  major: ["C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"],
  minor: ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"],
};
// Semitones above the tonic outside the scale: -1 the degree above lowered, +1 the one below raised.
const CHROMATIC = {
  major: { 1: -1, 3: -1, 6: 1, 8: -1, 10: -1 },
  minor: { 1: -1, 4: 1, 6: 1, 9: 1, 11: 1 },
};
const PLAIN_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"];
const FLAT_NAMES = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"];
const SHARP_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
const AVOIDED = new Set(["Cb", "Fb", "E#", "B#"]);
const ROOT = /^([A-G])([#b]*)(.*)$/; // a label's root and the rest ("m", "/Bb", "7")

const mod12 = (n) => ((n % 12) + 12) % 12;

/** "C" -> 0, "C#" -> 1, "Bb" -> 10; null for anything else. */
export function pitchClass(name) {
  const m = /^([A-G])([#b]*)$/.exec(name || "");
  if (!m) return null;
  const shift = [...m[2]].reduce((s, c) => s + (c === "#" ? 1 : -1), 0);
  return mod12(NATURAL_PC[LETTERS.indexOf(m[1])] + shift);
}

/** The name of pitch class pc on a letter (0 = C .. 6 = B), or null (two accidentals, or avoided). */
function letterName(letter, pc) {
  const accidental = mod12(pc - NATURAL_PC[letter] + 6) - 6; // semitones, in [-6, 5]
  if (Math.abs(accidental) > 1) return null;
  const name = LETTERS[letter] + ({ 0: "", 1: "#", [-1]: "b" })[accidental];
  return AVOIDED.has(name) ? null : name;
}

/** The flat or sharp names, after the accidentals of the key's own scale letters. */
function sideNames(tonicPc, mode) {
  const first = LETTERS.indexOf(TONIC_NAMES[mode][tonicPc][0]);
  const flats = SCALE_STEPS[mode].some((step, degree) => mod12(tonicPc + step - NATURAL_PC[(first + degree) % 7]) === 11);
  return flats ? FLAT_NAMES : SHARP_NAMES;
}

/** A pitch class named in a key (tonic pitch class, "major" | "minor"), or plainly without one. */
export function spellPitchClass(pc, tonicPc, mode) {
  pc = mod12(pc);
  if (tonicPc == null || !SCALE_STEPS[mode]) return PLAIN_NAMES[pc];
  const steps = SCALE_STEPS[mode];
  const interval = mod12(pc - tonicPc);
  const degree = steps.includes(interval) ? steps.indexOf(interval) : steps.indexOf(mod12(interval - CHROMATIC[mode][interval]));
  const name = letterName((LETTERS.indexOf(TONIC_NAMES[mode][tonicPc][0]) + degree) % 7, pc);
  return name ?? sideNames(tonicPc, mode)[pc];
}

/** The analysis's key {tonic: "Bb", mode: "major"} moved by `semitones`: {tonic: "C", mode}. */
export function transposeKey(key, semitones) {
  const pc = pitchClass(key?.tonic);
  if (pc == null || !TONIC_NAMES[key.mode]) return key;
  return { ...key, tonic: TONIC_NAMES[key.mode][mod12(pc + semitones)] };
}

/**
 * A chord label ("Bb", "Ebm", "C/E", "N") moved by `semitones` and spelled in `key` (the
 * analysis's key, untransposed; null: plain names): ("Bb", 2, F major) -> "C".
 */
export function transposeChord(label, semitones, key) {
  const m = ROOT.exec(label || "");
  if (!m) return label; // "N": no chord
  const moved = transposeKey(key, semitones);
  const tonic = pitchClass(moved?.tonic);
  const spell = (name) => {
    const pc = pitchClass(name);
    return pc == null ? name : spellPitchClass(pc + semitones, tonic, moved?.mode);
  };
  const rest = m[3].replace(/\/([A-G][#b]*)$/, (_, bass) => `/${spell(bass)}`);
  return spell(m[1] + m[2]) + rest;
}

/** "+2", "−3" or "" for a transposition in semitones. */
export function semitoneText(n) {
  return n > 0 ? `+${n}` : n < 0 ? `−${-n}` : "";
}
