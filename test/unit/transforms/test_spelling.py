"""Pitch-class and chord names spelled from the key (transforms/spelling.py)."""

from __future__ import annotations

import pytest

from transforms import spelling as S
from transforms.key import KeyResult, key_tuple, spelled

# Each key's twelve pitch classes C..B as a chart in that key writes them.
EXPECTED = {
    (0, "major"): "C Db D Eb E F F# G Ab A Bb B",  # bII bIII #IV bVI bVII
    (5, "major"): "C Db D Eb E F Gb G Ab A Bb B",
    (10, "major"): "C Db D Eb E F Gb G Ab A Bb B",  # bII of Bb is B, not Cb
    (4, "major"): "C C# D D# E F F# G G# A A# B",
    (6, "major"): "C C# D D# E F F# G G# A A# B",  # E# (its vii) reads as F
    (7, "major"): "C C# D Eb E F F# G Ab A Bb B",
    (9, "minor"): "C C# D D# E F F# G G# A Bb B",
    (4, "minor"): "C C# D D# E F F# G G# A A# B",
    (3, "minor"): "C Db D Eb E F Gb G Ab A Bb B",  # its VI is B rather than Cb
    (1, "minor"): "C C# D D# E F F# G G# A A# B",
    (2, "minor"): "C C# D Eb E F F# G G# A Bb B",
}


@pytest.mark.parametrize(("key", "names"), EXPECTED.items())
def test_each_key_spells_its_twelve_pitch_classes(key, names):
    assert [S.spell_pitch_class(pc, *key) for pc in range(12)] == names.split()


def test_keys_take_their_usual_names():
    majors = [S.spell_key(pc, "major")[0] for pc in range(12)]
    minors = [S.spell_key(pc, "minor")[0] for pc in range(12)]
    assert majors == "C Db D Eb E F F# G Ab A Bb B".split()
    assert minors == "C C# D Eb E F F# G G# A Bb B".split()
    with pytest.raises(ValueError, match="mode"):
        S.spell_key(0, "dorian")


def test_every_key_names_its_scale_with_seven_letters_at_most_one_accidental():
    for mode, steps in S.SCALE_STEPS.items():
        for tonic in range(12):
            names = [S.spell_pitch_class(tonic + s, tonic, mode) for s in steps]
            assert S.spell_pitch_class(tonic, tonic, mode) == S.spell_key(tonic, mode)[0]
            assert all(len(n) <= 2 for n in names)
            # never both sharps and flats in one key's scale
            assert not (any("#" in n for n in names) and any("b" in n for n in names[1:]))


def test_without_a_key_the_common_chart_names():
    assert [S.spell_pitch_class(pc, None, None) for pc in (1, 3, 6, 8, 10)] == [
        "C#", "Eb", "F#", "Ab", "Bb"
    ]  # fmt: skip


def test_chord_labels_and_harte():
    assert S.chord_label(10, "maj", (5, "major")) == "Bb"
    assert S.chord_label(3, "min", (3, "minor")) == "Ebm"
    assert S.chord_label(6, "min", (9, "major")) == "F#m"
    assert S.chord_label(None, "N", (0, "major")) == S.chord_label(2, "N", None) == "N"
    assert S.harte("Bb") == "Bb:maj" and S.harte("Ebm") == "Eb:min" and S.harte("N") == "N"
    assert S.harte("F#m") == "F#:min" and S.harte("C") == "C:maj"
    for bad in ("H", "Cmaj7", ""):
        with pytest.raises(ValueError):
            S.harte(bad)
    assert [S.pitch_class(n) for n in ("C", "C#", "Db", "Bb", "B#", "Cb")] == [0, 1, 1, 10, 0, 11]


def test_a_key_result_is_spelled_and_turned_into_a_pitch_class():
    assert spelled(KeyResult("A#", "major", 0.8)) == KeyResult("Bb", "major", 0.8)
    assert spelled(KeyResult("C#", "minor", 0.8)).tonic == "C#"
    assert spelled(KeyResult("D#", "minor", 0.8)).tonic == "Eb"
    assert key_tuple(KeyResult("F#", "major", 0.8)) == (6, "major")
    none = KeyResult(None, None, 0.0, "silent")
    assert spelled(none) == none and key_tuple(none) is None
