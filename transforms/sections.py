"""A song's sections (verse, chorus, ...) as labelled time spans: Laplacian structural
segmentation (McFee & Ellis 2014) with librosa.

On a beat grid (or a fixed frame grid when there are no beats): a recurrence graph links beats
whose constant-Q spectra are mutual nearest neighbours (repetitions, smoothed along the
diagonals so that repeated *sequences* stand out over single repeated chords), plus a path
graph linking consecutive beats whose MFCCs are alike (local continuity). The first
eigenvectors of its normalised Laplacian place beats of the same kind of section close
together; k-means on them gives a label per beat. The number of section types k is the one
whose final sections separate best (silhouette, in one embedding for every k); runs of a
label become sections, whose boundaries are snapped to the nearest downbeat (else beat), and
sections shorter than about 4 bars join their more similar neighbour. A run as long as two or
more sections of its type is that many repeats (the A A of A A B A). Labels are A, B, C... in
order of first appearance, so repeated parts share one. Audio whose section types hardly differ
in spectrum (noise, a held tone) has no sections.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.cluster.vq
import scipy.linalg
import scipy.ndimage
import scipy.sparse.csgraph
from sklearn.metrics import silhouette_score

from common.constants import ANALYSIS_RATE
from transforms.rhythm import HOP

MIN_TRACK_S = 15.0  # s: shorter audio holds too few sections to tell them apart
# The shortest section: 12 beats (a 4-bar section that lost a bar to snapping still counts),
# kept within 6-7.5 s. Shorter runs of a label are phrases within a section (measured: at
# 80 BPM the 2-bar halves of 4-bar sections, 6 s, cluster apart); the cap keeps 4-bar
# sections when the beats are tracked at half tempo (24 "beats" of 8 s at 120 BPM).
MIN_SECTION_S = 6.0
MAX_SHORTEST_S = 7.5
MIN_SECTION_BEATS = 12
SILENT_RMS = 1e-4  # whole-track RMS below this (-80 dBFS) is silence
FRAME_GRID_S = 0.5  # s: the grid cell without beats, about a beat at 120 BPM
MIN_BEATS = 16  # fewer beats than this cannot carry sections: use the frame grid
MIN_DOWNBEATS = 4  # fewer downbeats than this: boundaries fall on beats instead
MIN_CELL_S = 0.05  # s: beats closer than this to the previous one are dropped (a cell needs frames)
MAX_GRID = 1500  # grid cells at most: the dense affinity and its eigenvectors stay O(1 s)
BINS_PER_OCTAVE = 36  # CQT as in McFee & Ellis: three bins a semitone, seven octaves from C1
N_OCTAVES = 7
N_MFCC = 13
# the MFCCs' weight beside the CQT bins in the recurrence: 13 coefficients x 3^2 ~ half the
# variance of the 252 CQT bins
MFCC_WEIGHT = 3.0
REC_WIDTH = 3  # beats: a beat is not its own repetition within +-2 beats
DIAGONAL_BEATS = 7  # median filter along diagonals (time-lag): a repetition lasts > 1.5 bars
EMBED_SMOOTH = 9  # beats: median filter of the eigenvectors, so a label holds for a bar or two
MAX_TYPES = 8  # section types (clusters) tried: k = 2..8
KMEANS_RESTARTS = 10
# A section lasting m = 2..MAX_REPEATS times the shortest of its type, give or take this share
# of the shortest, is m repeats of it. A longer run is one long part (measured on a real song:
# a 78 s run beside a 7.5 s intro of the same type was cut in ten).
REPEAT_TOLERANCE = 0.25  # a bar of a 4-bar section; a last section also holds the release tail
MAX_REPEATS = 4
# Structureless audio: the section types found must differ in mean spectrum by this much
# (RMS over CQT bins, dB). Measured: generated songs ~4 dB, real excerpts 1.4-9.2 dB; white
# and pink noise, steady or tremolo tones and held chords 0.3-0.93 dB.
MIN_CONTRAST_DB = 1.2


@dataclass(frozen=True)
class Section:
    start_s: float
    end_s: float
    label: str  # "A", "B", ... in order of first appearance; a repeated part keeps its letter


@dataclass(frozen=True)
class Sections:
    sections: list[Section] | None  # in order, covering the track from 0 to its end
    reason: str = ""  # why there are no sections


def find_sections(
    mono_22k: np.ndarray, beats_s: list[float] | None, downbeats_s: list[float] | None
) -> Sections:
    """Labelled sections of a whole track: mono float32 audio `(n,)` at 22.05 kHz, its beats
    and downbeats in seconds (either may be None or empty). Boundaries fall on downbeats
    where there are some, else on beats, else on a `FRAME_GRID_S` grid. None, with the reason,
    for audio that is short, silent or holds no change of section (noise, a held tone)."""
    duration = mono_22k.shape[-1] / ANALYSIS_RATE
    if duration < MIN_TRACK_S:
        return Sections(None, f"too short: {duration:.1f} s, sections need {MIN_TRACK_S:g} s")
    if not np.all(np.isfinite(mono_22k)):
        return Sections(None, "the audio holds NaN or infinite samples")
    if float(np.sqrt(np.mean(np.square(mono_22k, dtype=np.float64)))) < SILENT_RMS:
        return Sections(None, "silent: RMS below -80 dBFS")
    edges = grid_edges(beats_s, duration)
    cqt_db, mfcc = grid_features(mono_22k, edges)
    embedding = laplacian_embedding(recurrence_affinity(cqt_db, mfcc))
    # every k is scored in the same space (all MAX_TYPES eigenvectors, rows scaled to unit
    # length), so that silhouettes of different k compare
    space = unit_rows(embedding)
    anchors = anchor_cells(snap_times(beats_s, downbeats_s), edges)
    shortest_s = shortest_section_s(beats_s)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for k in range(2, min(MAX_TYPES, embedding.shape[0] - 1) + 1):
        bounds, labels = segment(cell_labels(embedding, k), edges, anchors, cqt_db, shortest_s)
        if np.unique(labels).size < 2:
            continue
        score = float(silhouette_score(space, np.repeat(labels, np.diff(bounds))))
        if best is None or score > best[0]:
            best = (score, bounds, labels)
    if best is None:
        return Sections(None, "no change of section: the track sounds alike throughout")
    _, bounds, labels = best
    contrast = section_contrast(cqt_db, bounds, labels)
    if contrast < MIN_CONTRAST_DB:
        return Sections(
            None,
            f"no change of section: the parts found differ by {contrast:.1f} dB in spectrum, "
            f"less than {MIN_CONTRAST_DB:g} dB (noise, a held sound)",
        )
    bounds, labels = split_repeats(bounds, labels, edges, anchors)
    times = edges[bounds]
    letters = first_appearance_letters(labels)
    return Sections(
        [
            Section(round(float(a), 3), round(float(b), 3), letter)
            for a, b, letter in zip(times[:-1], times[1:], letters, strict=True)
        ]
    )


def grid_edges(beats_s: list[float] | None, duration: float) -> np.ndarray:
    """`(m + 1,)` s: edges of the m grid cells covering [0, duration], on the beats when there
    are enough of them, else every `FRAME_GRID_S`; at most `MAX_GRID` cells."""
    beats = np.sort(np.asarray(beats_s or [], dtype=np.float64))
    beats = beats[(beats >= MIN_CELL_S) & (beats <= duration - MIN_CELL_S)]
    beats = beats[np.diff(beats, prepend=0.0) >= MIN_CELL_S]
    inner = beats if beats.size >= MIN_BEATS else np.arange(FRAME_GRID_S, duration, FRAME_GRID_S)
    # a long, fast track: keep every step-th beat so the affinity stays small
    inner = inner[:: int(np.ceil((inner.size + 1) / MAX_GRID))]
    return np.concatenate([[0.0], inner, [duration]])


def grid_features(mono_22k: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per grid cell: the median CQT in dB `(BINS_PER_OCTAVE * N_OCTAVES, m)` (the median
    ignores the drum hits) and the mean MFCC `(N_MFCC, m)`."""
    cqt = np.abs(
        librosa.cqt(
            y=mono_22k,
            sr=ANALYSIS_RATE,
            hop_length=HOP,
            bins_per_octave=BINS_PER_OCTAVE,
            n_bins=BINS_PER_OCTAVE * N_OCTAVES,
        )
    )
    cqt_db = librosa.amplitude_to_db(cqt, ref=np.max)
    mfcc = librosa.feature.mfcc(
        S=librosa.power_to_db(
            librosa.feature.melspectrogram(y=mono_22k, sr=ANALYSIS_RATE, hop_length=HOP)
        ),
        n_mfcc=N_MFCC,
    )
    frames = librosa.time_to_frames(edges, sr=ANALYSIS_RATE, hop_length=HOP)
    frames = np.minimum(frames, cqt.shape[1])
    return (
        librosa.util.sync(cqt_db, frames, aggregate=np.median, pad=False),
        librosa.util.sync(mfcc, frames, pad=False),
    )


def recurrence_affinity(cqt_db: np.ndarray, mfcc: np.ndarray) -> np.ndarray:
    """`(m, m)` symmetric affinity of the grid cells: mutual-nearest-neighbour CQT
    recurrence, median-filtered along its diagonals, plus MFCC similarity of each cell with
    the next, the two weighted so that each contributes about half of every cell's degree."""
    # harmony and register (CQT) with timbre (MFCC): sections built on the same chords still
    # differ in their instruments
    timbre = np.vstack([standardised(cqt_db), MFCC_WEIGHT * standardised(mfcc)])
    rec = librosa.segment.recurrence_matrix(timbre, width=REC_WIDTH, mode="affinity", sym=True)
    # in time-lag coordinates a repeated passage is a horizontal line: filtering along it
    # keeps repetitions of a sequence and drops the lone chord that happens to recur
    rec = librosa.segment.timelag_filter(scipy.ndimage.median_filter)(rec, size=(1, DIAGONAL_BEATS))
    rec = 0.5 * (rec + rec.T)
    step = np.sum(np.diff(mfcc, axis=1) ** 2, axis=0)
    path_sim = np.exp(-step / max(float(np.median(step)), 1e-12))
    path = np.diag(path_sim, 1) + np.diag(path_sim, -1)
    deg_path, deg_rec = path.sum(axis=1), rec.sum(axis=1)
    # McFee & Ellis's balance: mu minimising the squared gap between the two degree vectors
    mu = deg_path @ (deg_path + deg_rec) / max(float(np.sum((deg_path + deg_rec) ** 2)), 1e-12)
    return mu * rec + (1.0 - mu) * path


def standardised(x: np.ndarray) -> np.ndarray:
    """`(d, m)` each row to zero mean and unit variance over the cells."""
    return (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-6)


def laplacian_embedding(affinity: np.ndarray) -> np.ndarray:
    """`(m, MAX_TYPES)` the eigenvectors of the normalised Laplacian with the smallest
    eigenvalues, median-filtered over `EMBED_SMOOTH` cells."""
    laplacian = scipy.sparse.csgraph.laplacian(affinity, normed=True)
    n = min(MAX_TYPES, affinity.shape[0])
    _, vectors = scipy.linalg.eigh(laplacian, subset_by_index=(0, n - 1))
    return scipy.ndimage.median_filter(vectors, size=(EMBED_SMOOTH, 1))


def cell_labels(embedding: np.ndarray, k: int) -> np.ndarray:
    """`(m,)` k-means cluster of each cell on the first k eigenvectors, each row scaled to
    unit length (Ng, Jordan & Weiss); the best of `KMEANS_RESTARTS` k-means++ starts."""
    rows = unit_rows(embedding[:, :k])
    best: tuple[float, np.ndarray] | None = None
    for seed in range(KMEANS_RESTARTS):
        with warnings.catch_warnings():
            # a cluster left empty by one start: that start just scores worse
            warnings.simplefilter("ignore", UserWarning)
            centroids, labels = scipy.cluster.vq.kmeans2(rows, k, minit="++", seed=seed)
        inertia = float(np.sum((rows - centroids[labels]) ** 2))
        if best is None or inertia < best[0]:
            best = (inertia, labels)
    return best[1]


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def snap_times(beats_s: list[float] | None, downbeats_s: list[float] | None) -> list[float]:
    """The times (s) boundaries snap to: the downbeats when there are enough, else the
    beats, else none (every grid edge)."""
    if downbeats_s and len(downbeats_s) >= MIN_DOWNBEATS:
        return list(downbeats_s)
    if beats_s and len(beats_s) >= MIN_BEATS:
        return list(beats_s)
    return []


def anchor_cells(times_s: list[float], edges: np.ndarray) -> np.ndarray:
    """Grid edge indices that boundaries may fall on: those nearest to the given times
    (downbeats or beats), else every edge."""
    if not times_s:
        return np.arange(edges.size)
    idx = np.searchsorted(edges, np.asarray(times_s, dtype=np.float64))
    idx = np.clip(idx, 1, edges.size - 1)
    left_nearer = (np.asarray(times_s) - edges[idx - 1]) < (edges[idx] - np.asarray(times_s))
    return np.unique(np.concatenate([[0, edges.size - 1], idx - left_nearer]))


def shortest_section_s(beats_s: list[float] | None) -> float:
    """The shortest section (s): `MIN_SECTION_BEATS` beats at the median beat period, within
    `MIN_SECTION_S`..`MAX_SHORTEST_S`."""
    if not beats_s or len(beats_s) < MIN_BEATS:
        return MIN_SECTION_S
    beat_s = float(np.median(np.diff(np.sort(beats_s))))
    return float(np.clip(MIN_SECTION_BEATS * beat_s, MIN_SECTION_S, MAX_SHORTEST_S))


def segment(
    cells: np.ndarray,
    edges: np.ndarray,
    anchors: np.ndarray,
    cqt_db: np.ndarray,
    shortest_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Sections from cell labels `(m,)`: edge indices `(s + 1,)` and a label per section
    `(s,)`. Each change of label moves to the nearest anchor; a section takes the label of
    most of its cells; sections shorter than `shortest_s` join the neighbour whose mean
    spectrum is nearer; neighbours with one label become one section."""
    changes = 1 + np.flatnonzero(cells[1:] != cells[:-1])
    nearest = anchors[np.argmin(np.abs(anchors[None, :] - changes[:, None]), axis=1)]
    bounds = np.unique(np.concatenate([[0, cells.size], nearest]))
    labels = [
        int(np.bincount(cells[a:b]).argmax()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    bounds = list(bounds)
    while len(labels) > 1:
        lengths = np.diff(edges[bounds])
        i = int(np.argmin(lengths))
        if lengths[i] >= shortest_s:
            break
        here = cqt_db[:, bounds[i] : bounds[i + 1]].mean(axis=1)
        gaps = [
            np.linalg.norm(cqt_db[:, bounds[j] : bounds[j + 1]].mean(axis=1) - here)
            if 0 <= j < len(labels)
            else np.inf
            for j in (i - 1, i + 1)
        ]
        j = i - 1 if gaps[0] <= gaps[1] else i + 1
        # drop the edge between section i and its neighbour j; the merged one keeps j's label
        del bounds[max(i, j)]
        del labels[i]
    keep = [0] + [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
    bounds = [bounds[i] for i in keep] + [bounds[-1]]
    return np.array(bounds), np.array([labels[i] for i in keep])


def split_repeats(
    bounds: np.ndarray, labels: np.ndarray, edges: np.ndarray, anchors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Split a section that lasts a whole multiple m = 2..`MAX_REPEATS` of the shortest
    section of its type into m equal parts on the nearest anchors: a part played twice in a
    row (the A A of A A B A) clusters as one run, but its length tells the repeats apart."""
    lengths = np.diff(edges[bounds])
    out = [int(bounds[0])]
    for i, label in enumerate(labels):
        shortest = float(lengths[labels == label].min())
        m = int(round(lengths[i] / shortest))
        whole = abs(lengths[i] / shortest - m) <= REPEAT_TOLERANCE
        if 2 <= m <= MAX_REPEATS and whole and lengths[i] / m >= MIN_SECTION_S:
            start_s = edges[bounds[i]]
            for j in range(1, m):
                cut = np.searchsorted(edges, start_s + j * lengths[i] / m)
                out.append(int(anchors[np.argmin(np.abs(anchors - cut))]))
        out.append(int(bounds[i + 1]))
    splits = np.unique(out)
    # each new part keeps the label of the section it came from
    owner = np.searchsorted(bounds, splits[:-1], side="right") - 1
    return splits, labels[owner]


def section_contrast(cqt_db: np.ndarray, bounds: np.ndarray, labels: np.ndarray) -> float:
    """How much the section types differ (dB): the RMS over CQT bins and cells of each
    cell's section-type mean spectrum about the track's mean spectrum."""
    per_cell = np.repeat(labels, np.diff(bounds))
    mean = cqt_db.mean(axis=1, keepdims=True)
    between = 0.0
    for label in np.unique(per_cell):
        members = cqt_db[:, per_cell == label]
        between += members.shape[1] * float(
            np.sum((members.mean(axis=1, keepdims=True) - mean) ** 2)
        )
    return float(np.sqrt(between / cqt_db.size))


def first_appearance_letters(labels: np.ndarray) -> list[str]:
    """Cluster ids -> "A", "B", ... in order of first appearance."""
    order: dict[int, str] = {}
    for label in labels:
        order.setdefault(int(label), chr(ord("A") + len(order)))
    return [order[int(label)] for label in labels]
