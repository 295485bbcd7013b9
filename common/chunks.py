"""Chunk planning and weighted overlap-add: the one implementation every separator uses.

The plan reproduces `demucs.apply.apply_model(split=True, overlap, transition_power)`:
segment `S` frames, stride `int((1 - overlap) * S)`, offsets `range(0, n, stride)`. A chunk's
centre is `[offset, offset + length)` with `length = min(S, n - offset)`; the model sees a
window of `padded_length` frames around it, taken from the real neighbouring samples exactly as
`TensorChunk.padded` does (zeros only outside the track). The model output is centre-trimmed back
to `length`, weighted by the triangle window's first `length` values and summed; the sum is
divided by the summed weights. Summing in offset order, in float32, as Demucs does, keeps the
result equal to Demucs' own.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from common.constants import SAMPLE_RATE
from common.interfaces import ChunkPlan, ChunkSpec, Normalisation

MAX_SHIFT = int(0.5 * SAMPLE_RATE)  # frames: Demucs' random shift is up to half a second


def plan_chunks(
    n_frames: int,
    segment: int,
    overlap: float,
    padded_length: Callable[[int], int],
    transition_power: float = 1.0,
    *,
    lead: int = 0,
    first_index: int = 0,
    member: int | None = None,
    weights: list[float] | None = None,
) -> ChunkPlan:
    """Plan the chunks of a pass of `n_frames` frames (track frames + `lead`).

    `segment` is S in frames; `padded_length(length)` gives the window the model needs for a
    chunk of `length` frames (Demucs: `model.valid_length`, context-padded separators:
    `length + 2 * context`). It must be ≥ `length`. Chunks are numbered from `first_index`.
    `member` and `weights`: the bag member that runs the pass and its weights (`plan_passes`).
    """
    if n_frames <= 0:
        raise ValueError(f"cannot plan chunks for {n_frames} frames")
    if segment <= 0:
        raise ValueError(f"segment must be positive, got {segment}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, int((1 - overlap) * segment))
    chunks = []
    for index, offset in enumerate(range(0, n_frames, stride), start=first_index):
        length = min(segment, n_frames - offset)
        window = padded_length(length)
        if window < length:
            raise ValueError(f"padded length {window} is shorter than the chunk ({length})")
        delta = window - length
        chunks.append(
            ChunkSpec(
                index=index,
                offset=offset,
                length=length,
                window_start=offset - delta // 2,
                window_length=window,
                member=member,
                pass_frames=n_frames,
            )
        )
    return ChunkPlan(
        n_frames=n_frames,
        lead=lead,
        weights=weights,
        segment=segment,
        stride=stride,
        transition_power=transition_power,
        chunks=chunks,
    )


def plan_passes(
    n_frames: int,
    segment: int,
    overlap: float,
    padded_length: Callable[[int], int],
    shifts: int = 0,
    seed: int = 0,
    max_shift: int = MAX_SHIFT,
    members: list[list[float]] | None = None,
) -> list[ChunkPlan]:
    """One plan, or one per shift as `apply_model(shifts=K)` does: pass k runs on the track
    delayed by `max_shift - offset_k` zeros, `offset_k = random.randint(0, max_shift)` drawn
    from `random.Random(seed)`, so a job is reproducible. (Demucs draws from the global
    `random`, between its transformer's own calls to it, so no seed gives its draws beyond
    the first; given the same offsets, it gives the same result.)

    `members`: the per-stem weights of a bag's members. With shifts, `apply_model` runs each
    member on its own K shifted passes, drawn member after member, and combines the members'
    averages with those weights: so do these plans, K per member, each run by its member alone
    (`ChunkSpec.member`) and weighted by it (`ChunkPlan.weights`) when the fuser averages
    them. Without shifts one pass serves the whole bag, combined per chunk by the predictor
    (overlap-add is linear, so that is the same sum).
    """
    if shifts == 0:
        return [plan_chunks(n_frames, segment, overlap, padded_length)]
    rng = random.Random(seed)
    runs: list[tuple[int | None, list[float] | None]] = [(None, None)]
    if members and len(members) > 1:
        runs = list(enumerate(members))
    plans: list[ChunkPlan] = []
    for member, weights in runs:
        for _ in range(shifts):
            lead = max_shift - rng.randint(0, max_shift)
            first = sum(len(p.chunks) for p in plans)
            plans.append(
                plan_chunks(
                    n_frames + lead,
                    segment,
                    overlap,
                    padded_length,
                    lead=lead,
                    first_index=first,
                    member=member,
                    weights=weights,
                )
            )
    return plans


def chunk_window(
    track: np.ndarray, chunk: ChunkSpec, norm: Normalisation | None = None, lead: int = 0
) -> np.ndarray:
    """The samples the model sees for `chunk`: track (C, n) -> (C, window_length) float32.

    Real neighbouring samples where the track has them, zeros beyond its ends
    (as `demucs.apply.TensorChunk.padded`). With `norm`, the real samples are standardised as
    `(x - mean) / std` first, so the padding stays zero as it does when Demucs pads the
    already standardised track. `lead` is the pass's delay (see `plan_passes`).
    """
    n = track.shape[-1]
    start = chunk.window_start - lead  # in track frames
    end = start + chunk.window_length
    lo, hi = max(0, start), min(n, end)
    out = np.zeros((track.shape[0], chunk.window_length), dtype=np.float32)
    if hi > lo:
        real = out[:, lo - start : hi - start]
        real[:] = track[:, lo:hi]
        if norm is not None:
            real -= np.float32(norm.mean)
            real /= np.float32(norm.std)
    return out


def standardisation(track, block: int = 1 << 20) -> Normalisation:
    """Whole-track statistics as `demucs.api.Separator.separate_tensor` takes them: mean and
    unbiased std of the mono mix, the std with 1e-8 added. `track` is (2, n): an array or
    anything sliced as `track[:, lo:hi]` (a `RawArrayFile`); read in blocks, two passes in
    float64, so a long song needs no second copy in memory."""
    n = track.shape[-1]

    def monos():
        for lo in range(0, n, block):
            yield np.asarray(track[:, lo : min(n, lo + block)]).mean(axis=0, dtype=np.float64)

    mean = sum(float(m.sum()) for m in monos()) / n
    squares = sum(float(np.square(m - mean).sum()) for m in monos())
    std = (squares / (n - 1)) ** 0.5 if n > 1 else 0.0
    return Normalisation(mean=mean, std=float(np.float32(std) + np.float32(1e-8)))


def center_trim(window_out: np.ndarray, length: int) -> np.ndarray:
    """(..., window) -> (..., length): drop `delta // 2` frames on the left, the rest on the right
    (as `demucs.utils.center_trim`, so it undoes `chunk_window`'s placement)."""
    delta = window_out.shape[-1] - length
    if delta < 0:
        raise ValueError(f"cannot trim {window_out.shape[-1]} frames to {length}")
    left = delta // 2
    return window_out[..., left : left + length]


def triangle_weight(segment: int, transition_power: float = 1.0) -> np.ndarray:
    """(segment,) float32: maximal in the middle of the segment, as in `apply_model`.

    A triangle so that overlapping chunks cross-fade: each frame's estimate leans on the chunk
    where that frame is furthest from an edge, and thus has the most context.
    """
    half = segment // 2
    weight = np.concatenate([np.arange(1, half + 1), np.arange(segment - half, 0, -1)]).astype(
        np.float32
    )
    weight = weight / weight.max()
    if transition_power != 1.0:
        weight = weight**transition_power
    return weight.astype(np.float32)


def overlap_add(
    pieces: Iterable[tuple[ChunkSpec, np.ndarray]],
    plan: ChunkPlan,
    n_channels: tuple[int, ...],
) -> np.ndarray:
    """Fuse centre-trimmed chunk outputs (..., length) into the track (..., n_frames).

    `n_channels` is the leading shape of every piece, e.g. (n_stems, 2). Pieces are added in the
    order given; pass them by ascending offset to match Demucs bit for bit.
    """
    out = np.zeros((*n_channels, plan.n_frames), dtype=np.float32)
    weight_sum = np.zeros(plan.n_frames, dtype=np.float32)
    weight = triangle_weight(plan.segment, plan.transition_power)
    for chunk, piece in pieces:
        add_weighted(out, weight_sum, chunk, piece, weight)
    return divide_by_weight(out, weight_sum)


def add_weighted(
    out: np.ndarray,
    weight_sum: np.ndarray,
    chunk: ChunkSpec,
    piece: np.ndarray,
    weight: np.ndarray,
) -> None:
    """Add one chunk's piece (..., length) into `out` (..., n) in place, with its weights."""
    if piece.shape[-1] != chunk.length:
        raise ValueError(f"chunk {chunk.index}: {piece.shape[-1]} frames, expected {chunk.length}")
    w = weight[: chunk.length]
    sl = slice(chunk.offset, chunk.offset + chunk.length)
    out[..., sl] += w * piece
    weight_sum[sl] += w


def divide_by_weight(out: np.ndarray, weight_sum: np.ndarray) -> np.ndarray:
    """out / weight_sum, in place; frames no chunk covered (impossible with a valid plan) stay 0."""
    covered = weight_sum > 0
    if not covered.all():
        raise ValueError(f"{int((~covered).sum())} frames were covered by no chunk")
    out /= weight_sum
    return out


# --- the fade grid of ZFTurbo's Music-Source-Separation-Training (MSST) ------------------------


@dataclass(frozen=True)
class FadeGrid:
    """The chunks MSST's `demix` (generic mode) runs over a track of `n_frames` frames.

    The track is reflect-padded by `pad` frames on each side (`border = chunk - step`, when the
    track is longer than two borders); chunk k starts at padded frame `k * step`, i.e. at track
    frame `starts[k]` (negative in the padding), and holds `lengths[k]` real frames of the padded
    track, itself padded to `chunk` (reflected when longer than half a chunk, zeros otherwise).
    Each output is weighted by `fade_window`, without the fade-in or fade-out its batch drops
    (`fade_in` / `fade_out`), summed and divided by the summed weights.
    """

    n_frames: int
    chunk: int
    step: int
    fade: int
    pad: int
    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    fade_in: tuple[bool, ...]
    fade_out: tuple[bool, ...]

    def weight(self, k: int) -> np.ndarray:
        """(chunk,) float32: chunk k's window."""
        window = fade_window(self.chunk, self.fade)
        if not self.fade_in[k]:
            window[: self.fade] = 1
        if not self.fade_out[k]:
            window[len(window) - self.fade :] = 1
        return window

    def touching(self, lo: int, hi: int) -> list[int]:
        """The chunks whose real frames meet track frames [lo, hi), in order."""
        return [
            k
            for k, (s, n) in enumerate(zip(self.starts, self.lengths, strict=True))
            if s < hi and s + n > lo
        ]


def fade_window(size: int, fade: int) -> np.ndarray:
    """(size,) float32: ones with a linear fade-in (0 -> 1) over the first `fade` frames and a
    fade-out (1 -> 0) over the last, as MSST's `_getWindowingArray`."""
    window = np.ones(size, dtype=np.float32)
    if fade > 0:
        window[size - fade :] = np.linspace(1, 0, fade, dtype=np.float32)
        window[:fade] = np.linspace(0, 1, fade, dtype=np.float32)
    return window


def fade_grid(n_frames: int, chunk: int, num_overlap: int, batch_size: int = 1) -> FadeGrid:
    """MSST's chunks for `n_frames` frames: `chunk` frames each, `chunk // num_overlap` apart,
    fades of `chunk // 10`. MSST sets one window per batch of `batch_size` chunks: no fade-in
    when the batch's last chunk is the first chunk, else no fade-out when it is the last."""
    if n_frames <= 0 or chunk <= 0 or num_overlap <= 0 or batch_size <= 0:
        raise ValueError(f"bad fade grid: {n_frames=} {chunk=} {num_overlap=} {batch_size=}")
    step = chunk // num_overlap
    if step <= 0:
        raise ValueError(f"num_overlap {num_overlap} leaves no step for chunks of {chunk}")
    border = chunk - step
    pad = border if n_frames > 2 * border and border > 0 else 0
    total = n_frames + 2 * pad
    offsets = range(0, total, step)
    last = len(offsets) - 1
    fade_in, fade_out = [], []
    for k in range(len(offsets)):
        batch_last = min(last, (k // batch_size + 1) * batch_size - 1)
        fade_in.append(offsets[batch_last] != 0)
        fade_out.append(offsets[batch_last] == 0 or batch_last != last)
    return FadeGrid(
        n_frames=n_frames,
        chunk=chunk,
        step=step,
        fade=chunk // 10,
        pad=pad,
        starts=tuple(i - pad for i in offsets),
        lengths=tuple(min(chunk, total - i) for i in offsets),
        fade_in=tuple(fade_in),
        fade_out=tuple(fade_out),
    )


def fade_chunk_input(grid: FadeGrid, k: int, region: np.ndarray, region_start: int) -> np.ndarray:
    """(C, chunk) float32: what the model sees for chunk k, from `region` (C, m), the track's
    frames [region_start, region_start + m). Beyond the track's ends the padded track is its
    reflection (`torch.nn.functional.pad(mode="reflect")`: the edge frame is not repeated)."""
    start, length, n = grid.starts[k], grid.lengths[k], grid.n_frames
    frames = np.arange(start, start + length)
    frames = np.where(frames < 0, -frames, frames)
    frames = np.where(frames >= n, 2 * (n - 1) - frames, frames) - region_start
    if frames.min() < 0 or frames.max() >= region.shape[-1]:
        raise ValueError(f"chunk {k} needs track frames beyond the region it was given")
    part = region[:, frames]
    missing = grid.chunk - length
    if missing:
        mode = "reflect" if length > grid.chunk // 2 else "constant"
        part = np.pad(part, ((0, 0), (0, missing)), mode=mode)
    return np.ascontiguousarray(part, dtype=np.float32)


def fade_overlap_add(
    grid: FadeGrid, outputs: dict[int, np.ndarray], lo: int, hi: int
) -> np.ndarray:
    """(..., hi - lo): track frames [lo, hi) of MSST's result, from the outputs (..., chunk) of
    every chunk that touches them (`grid.touching(lo, hi)`), added in chunk order."""
    some = next(iter(outputs.values()))
    out = np.zeros((*some.shape[:-1], hi - lo), dtype=np.float32)
    weight_sum = np.zeros(hi - lo, dtype=np.float32)
    for k in grid.touching(lo, hi):
        start, length = grid.starts[k], grid.lengths[k]
        a, b = max(lo, start), min(hi, start + length)
        w = grid.weight(k)[a - start : b - start]
        out[..., a - lo : b - lo] += outputs[k][..., a - start : b - start] * w
        weight_sum[a - lo : b - lo] += w
    # MSST divides and turns 0/0 into 0; a frame of the track always has some weight, as the
    # first chunk's fade-in lies in the padding.
    np.divide(out, weight_sum, out=out, where=weight_sum > 0)
    return out
