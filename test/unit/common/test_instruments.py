"""The stem-family table names real AudioSet classes; scores map as documented."""

from __future__ import annotations

import numpy as np
import pytest

from common.instruments import (
    STEM_FAMILIES,
    STEM_LABELS,
    stems_from_activity,
    stems_from_labels,
)
from test.astutil import audioset_labels


def test_every_table_label_is_an_audioset_class_and_each_counts_once():
    labels = set(audioset_labels())
    assert len(audioset_labels()) == 527
    seen = set()
    for family in STEM_FAMILIES:
        names = set(STEM_LABELS[family])
        assert names <= labels, names - labels
        assert not names & seen, names & seen
        seen |= names


def test_a_family_scores_its_best_class():
    labels = audioset_labels()
    scores = np.zeros(len(labels))
    scores[labels.index("Female singing")] = 0.7
    scores[labels.index("Singing")] = 0.4
    scores[labels.index("Electric guitar")] = 0.9
    scores[labels.index("Music")] = 1.0  # counts for no family
    present = stems_from_labels(scores, labels)
    assert present == {
        "vocals": 0.7,
        "drums": 0.0,
        "bass": 0.0,
        "guitar": 0.9,
        "piano": 0.0,
        "other": 0.0,
    }
    assert stems_from_labels(np.ones(3), ["A", "B", "C"]) == dict.fromkeys(STEM_FAMILIES, 0.0)


@pytest.mark.parametrize(
    ("level", "mix", "score"),
    [(-20.0, -20.0, 1.0), (-35.0, -20.0, 0.5), (-55.0, -20.0, 0.0), (-70.0, -75.0, 0.0)],
)
def test_stem_levels_against_the_mix(level, mix, score):
    assert stems_from_activity({"drums": level, "no_drums": -1.0}, mix) == {"drums": score}


def test_a_chained_stem_s_parts_count_for_its_family():
    """vocals-lead and vocals-backing: vocals, as present as the louder part."""
    activity = {"vocals-lead": -70.0, "vocals-backing": -35.0, "drums-kick": -90.0}
    assert stems_from_activity(activity, -20.0) == {"vocals": 0.5, "drums": 0.0}
