"""Which stems are present in a window: from AudioSet labels, or from the stems themselves.

`STEM_LABELS` is the documented table (README, "Analysis"): the AudioSet classes (display
names of the ontology, as AST's `id2label` spells them) that count as evidence of each stem
family. A family's score is the highest sigmoid score among its classes: AudioSet is multi-label
and its classes nest (Guitar > Electric guitar), so the best-scoring class is the evidence, and
a sum would count one instrument several times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

STEM_FAMILIES = ("vocals", "drums", "bass", "guitar", "piano", "other")

STEM_LABELS: dict[str, tuple[str, ...]] = {
    "vocals": (
        "Singing",
        "Choir",
        "Yodeling",
        "Chant",
        "Mantra",
        "Male singing",
        "Female singing",
        "Child singing",
        "Synthetic singing",
        "Rapping",
        "Humming",
        "Vocal music",
        "A capella",
        "Beatboxing",
    ),
    "drums": (
        "Drum kit",
        "Drum machine",
        "Drum",
        "Snare drum",
        "Rimshot",
        "Drum roll",
        "Bass drum",
        "Timpani",
        "Tabla",
        "Cymbal",
        "Hi-hat",
        "Percussion",
        "Tambourine",
        "Wood block",
        "Maraca",
        "Drum and bass",
    ),
    "bass": ("Bass guitar", "Double bass"),
    "guitar": (
        "Guitar",
        "Electric guitar",
        "Acoustic guitar",
        "Steel guitar, slide guitar",
        "Tapping (guitar technique)",
        "Strum",
        "Plucked string instrument",
        "Banjo",
        "Mandolin",
        "Ukulele",
    ),
    "piano": ("Piano", "Electric piano", "Keyboard (musical)", "Harpsichord"),
    "other": (
        "Synthesizer",
        "Sampler",
        "Organ",
        "Electronic organ",
        "Hammond organ",
        "Orchestra",
        "Brass instrument",
        "French horn",
        "Trumpet",
        "Trombone",
        "Bowed string instrument",
        "String section",
        "Violin, fiddle",
        "Cello",
        "Wind instrument, woodwind instrument",
        "Flute",
        "Saxophone",
        "Clarinet",
        "Harp",
        "Accordion",
        "Harmonica",
        "Mallet percussion",
        "Marimba, xylophone",
        "Glockenspiel",
        "Vibraphone",
        "Steelpan",
        "Sitar",
        "Zither",
    ),
}

# From the stems' own levels (when AST is unavailable): a stem as loud as the whole mix scores
# 1, one ACTIVITY_RANGE_DB quieter or more scores 0, linear in dB between; a stem quieter than
# SILENT_STEM_DB is absent whatever the mix.
ACTIVITY_RANGE_DB = 30.0
SILENT_STEM_DB = -60.0


def stems_from_labels(scores: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Per stem family the best sigmoid score `(n_labels,)` among its `STEM_LABELS` classes;
    0.0 for a family none of whose classes the model knows."""
    index = {label: i for i, label in enumerate(labels)}
    present = {}
    for family in STEM_FAMILIES:
        ids = [index[name] for name in STEM_LABELS[family] if name in index]
        present[family] = round(float(np.max(scores[ids])), 4) if ids else 0.0
    return present


def stem_family(stem: str) -> str | None:
    """The family a separator's stem belongs to: itself, a chained stem's part its stem's
    (`vocals-lead`: vocals), or None (`no_vocals`, unknown)."""
    stem = stem.split("-", 1)[0]
    return stem if stem in STEM_FAMILIES else None


def stems_from_activity(activity_db: Mapping[str, float], mix_db: float) -> dict[str, float]:
    """Per stem family present among the job's stems, a score in [0, 1] from its RMS in the
    window (dBFS) against the mixture's."""
    present = {}
    for stem, level in activity_db.items():
        family = stem_family(stem)
        if family is None:
            continue
        if level < SILENT_STEM_DB or not math.isfinite(mix_db):
            present.setdefault(family, 0.0)
            continue
        score = round(min(1.0, max(0.0, 1.0 + (level - mix_db) / ACTIVITY_RANGE_DB)), 4)
        present[family] = max(score, present.get(family, 0.0))  # a part's loudest
    return present
