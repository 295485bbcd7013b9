"""Pitch-class and chord names spelled from the key, as musicians write them.

A key's own notes take the letters of its scale (F major: F G A Bb C D E, never A#), so its
tonic decides the spelling: `TONIC_NAMES` holds the usual name of each key (Db major, not C#;
C# minor, not Db; F# major, not Gb, so that its IV is B and not Cb). A pitch class outside the
scale is named by what a chord on it usually is (`CHROMATIC`): in a major key the borrowed
chords bII, bIII, bVI, bVII are flats (Bb in C major) and #IV is sharp (F# in C: the third of
V-of-V); in a minor key bII is flat and the raised degrees (major III's third, #IV, the melodic
6th, the leading tone) are sharps (G# in A minor). Names a chord chart avoids (Cb, Fb, E#, B#,
double accidentals) fall back to the key's side: B rather than Cb in Eb minor.

Labels are ASCII ("Bb", "F#m"); `harte` turns them into mir_eval's syntax ("Bb:maj").
"""

from __future__ import annotations

LETTERS = "CDEFGAB"
NATURAL_PC = (0, 2, 4, 5, 7, 9, 11)  # pitch class of each letter
SCALE_STEPS = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}  # natural minor

# The usual name of each key's tonic, by pitch class: the spelling with fewer accidentals, and
# where both have six (F#/Gb major, D#/Eb minor) the one whose common chords read plainly.
TONIC_NAMES = {
    "major": ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"),
    "minor": ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"),
}
# Pitch classes outside the scale, by semitones above the tonic: -1 spells it as the scale
# degree above lowered (bVII), +1 as the degree below raised (#IV).
CHROMATIC = {
    "major": {1: -1, 3: -1, 6: +1, 8: -1, 10: -1},
    "minor": {1: -1, 4: +1, 6: +1, 9: +1, 11: +1},
}
# Without a key: the names pop chord charts use most.
PLAIN_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
FLAT_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
AVOIDED = {"Cb", "Fb", "E#", "B#"}
QUALITY_SUFFIX = {"maj": "", "min": "m"}


def pitch_class(name: str) -> int:
    """ "C" -> 0, "C#" -> 1, "Bb" -> 10 (any number of # and b after a letter A-G)."""
    if not name or name[0].upper() not in LETTERS or set(name[1:]) - {"#", "b"}:
        raise ValueError(f"expected a pitch name like 'C', 'F#' or 'Bb', got {name!r}")
    return (NATURAL_PC[LETTERS.index(name[0].upper())] + name.count("#") - name[1:].count("b")) % 12


def spell_key(tonic_pc: int, mode: str) -> tuple[str, str]:
    """(tonic pitch class 0-11, "major" | "minor") -> (the tonic's usual name, mode):
    (10, "major") -> ("Bb", "major"), (1, "minor") -> ("C#", "minor")."""
    if mode not in TONIC_NAMES:
        raise ValueError(f"mode must be 'major' or 'minor', got {mode!r}")
    return TONIC_NAMES[mode][tonic_pc % 12], mode


def _letter_name(letter: int, pc: int) -> str | None:
    """The name of pitch class `pc` on a letter (0 = C .. 6 = B), or None when it needs more
    than one accidental or is one a chart avoids."""
    accidental = (pc - NATURAL_PC[letter] + 6) % 12 - 6  # semitones, in [-6, 5]
    if abs(accidental) > 1:
        return None
    name = LETTERS[letter] + {0: "", 1: "#", -1: "b"}[accidental]
    return None if name in AVOIDED else name


def spell_pitch_class(pc: int, key_tonic_pc: int | None, mode: str | None) -> str:
    """A pitch class (0-11) named in a key: "Bb" in F major, "A#" in B major, "F#" in C major;
    without a key (None) the names pop charts use most (C#, Eb, F#, Ab, Bb)."""
    pc %= 12
    if key_tonic_pc is None or mode is None:
        return PLAIN_NAMES[pc]
    tonic_name, _ = spell_key(key_tonic_pc, mode)
    steps = SCALE_STEPS[mode]
    interval = (pc - key_tonic_pc) % 12
    if interval in steps:
        degree = steps.index(interval)
    else:
        degree = steps.index((interval - CHROMATIC[mode][interval]) % 12)
    name = _letter_name((LETTERS.index(tonic_name[0]) + degree) % 7, pc)
    if name is not None:
        return name
    return _side_names(key_tonic_pc, mode)[pc]


def _side_names(tonic_pc: int, mode: str) -> tuple[str, ...]:
    """The flat or sharp names, after the accidentals of the key's own scale letters."""
    first = LETTERS.index(spell_key(tonic_pc, mode)[0][0])
    flats = any(
        (tonic_pc + step - NATURAL_PC[(first + degree) % 7]) % 12 == 11
        for degree, step in enumerate(SCALE_STEPS[mode])
    )
    return FLAT_NAMES if flats else SHARP_NAMES


def chord_label(root_pc: int | None, quality: str, key: tuple[int, str] | None) -> str:
    """A chord's label spelled in `key` = (tonic pitch class, "major" | "minor") or None:
    (10, "maj", (5, "major")) -> "Bb", (3, "min", (3, "minor")) -> "Ebm"; "N" when there is no
    chord (root None or quality "N")."""
    if root_pc is None or quality == "N":
        return "N"
    if quality not in QUALITY_SUFFIX:
        raise ValueError(f"quality must be one of {sorted(QUALITY_SUFFIX)} or 'N', got {quality!r}")
    tonic, mode = key if key is not None else (None, None)
    return spell_pitch_class(root_pc, tonic, mode) + QUALITY_SUFFIX[quality]


def harte(label: str) -> str:
    """Our label -> Harte syntax for mir_eval: "Bb" -> "Bb:maj", "Ebm" -> "Eb:min", "N" -> "N"."""
    if label == "N":
        return "N"
    root_len = 2 if len(label) > 1 and label[1] in "#b" else 1
    root, suffix = label[:root_len], label[root_len:]
    pitch_class(root)  # raises on a bad root
    qualities = {v: k for k, v in QUALITY_SUFFIX.items()}
    if suffix not in qualities:
        raise ValueError(f"expected a label like 'Bb', 'Ebm' or 'N', got {label!r}")
    return f"{root}:{qualities[suffix]}"
