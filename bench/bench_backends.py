"""Which way of running htdemucs is fastest on this CPU, at the predictor's exactness?

    .venv/bin/python bench/bench_backends.py [--variants eager,inductor,...] [--rounds 6]
        [--windows 3] [--threads 2]
    .venv/bin/python bench/bench_backends.py --env-variants default,passive,taskset0 [--rounds 4]

Full-size htdemucs (random weights), windows of one training length (7.8 s) cut from real
music as a job cuts them (standardised). Every variant is built (and compiled) first, then the
variants run one window each, in turn, round after round (A, B, C, A, B, C, ...), so that
whatever else loads the machine hits them alike; the order rotates each round. Prints each
variant's median seconds per window, the RTF that gives for a 60 s song (11 windows with the
25 % overlap, as `bench_predictor` counts it), its speed against the eager model and
max |diff| / peak of its full forward (STFT, core, mask, iSTFT) against the eager forward on
the same windows. The bar to adopt a variant: >= 1.2x the current compiled core (`inductor`)
at <= 1e-4 of the peak.

`--env-variants` times the current compiled core in child processes of this script under
other OpenMP settings or CPU affinity (these are fixed when a process starts), alternating the
children round by round; each child compiles (from inductor's cache) before it is timed.
The OpenVINO variants need `pip install openvino==2026.4.1` (not a dependency of the project:
it did not meet the bar, see the README); without it they report that they failed to build.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench.bench_demucs_service import song  # noqa: E402
from common.chunks import chunk_window, plan_chunks, standardisation  # noqa: E402
from common.constants import SAMPLE_RATE  # noqa: E402
from prediction.compiled import CompiledHTDemucs, CompileOptions, HTDemucsCore  # noqa: E402
from prediction.demucs_separator import HTDEMUCS_SEGMENT_S  # noqa: E402
from test import separation_fixtures as fx  # noqa: E402

SONG_S = 60.0  # the RTF is for a song this long, counted as bench_predictor counts it
ADOPT_SPEEDUP, ADOPT_ERROR = 1.2, 1e-4


@dataclass(frozen=True)
class InductorOptions(CompileOptions):
    """CompileOptions plus raw `torch._inductor.config` keys (cpp_wrapper, epilogue_fusion...)."""

    extra: tuple[tuple[str, object], ...] = ()

    def inductor_options(self) -> dict:
        return {**super().inductor_options(), **dict(self.extra)}


class OpenVinoHTDemucs(nn.Module):
    """htdemucs with `HTDemucsCore` converted to OpenVINO and compiled for its CPU plugin;
    STFT, mask and iSTFT stay in torch, as with the inductor core."""

    def __init__(self, model: nn.Module, threads: int, precision: str = "f32"):
        super().__init__()
        import openvino as ov

        self.model = model
        self.length = int(model.segment * model.samplerate)
        mix = torch.zeros(1, model.audio_channels, self.length)
        mag = model._magnitude(model._spec(mix))
        converted = ov.convert_model(HTDemucsCore(model).eval(), example_input=(mag, mix))
        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
        }
        self.core = ov.Core().compile_model(converted, "CPU", config)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        m = self.model
        z = m._spec(mix)
        result = self.core((m._magnitude(z).numpy(), mix.numpy()))
        x, xt = (torch.from_numpy(result[i]) for i in range(2))
        return xt + m._ispec(m._mask(z, x), self.length)


class TorchScriptHTDemucs(nn.Module):
    """htdemucs with its core traced, frozen and `optimize_for_inference`d (TorchScript)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.length = int(model.segment * model.samplerate)
        mix = torch.zeros(1, model.audio_channels, self.length)
        mag = model._magnitude(model._spec(mix))
        traced = torch.jit.trace(HTDemucsCore(model).eval(), (mag, mix), check_trace=False)
        self.core = torch.jit.optimize_for_inference(torch.jit.freeze(traced))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        m = self.model
        z = m._spec(mix)
        x, xt = self.core(m._magnitude(z), mix)
        return xt + m._ispec(m._mask(z, x), self.length)


def inductor(**kwargs) -> Callable[[nn.Module, int], nn.Module]:
    mode = kwargs.pop("mode", "default")
    freezing = kwargs.pop("freezing", True)
    options = InductorOptions(mode=mode, freezing=freezing, extra=tuple(kwargs.items()))
    return lambda model, threads: CompiledHTDemucs(model, "cpu", options)


# name -> (build(model, threads) -> forward, torch threads while it runs)
VARIANTS: dict[str, tuple[Callable[[nn.Module, int], nn.Module], int | None]] = {
    "eager": (lambda model, threads: model, None),
    "eager-1thread": (lambda model, threads: model, 1),
    "inductor": (inductor(), None),
    "inductor-1thread": (inductor(), 1),
    "inductor-cpp_wrapper": (inductor(cpp_wrapper=True), None),
    "inductor-max_autotune": (inductor(mode="max-autotune-no-cudagraphs"), None),
    "inductor-no_freezing": (inductor(freezing=False), None),
    "inductor-no_epilogue_fusion": (inductor(epilogue_fusion=False), None),
    "inductor-no_layout_opt": (inductor(layout_optimization=False), None),
    "inductor-no_weight_prepack": (inductor(**{"cpp.weight_prepack": False}), None),
    "torchscript": (lambda model, threads: TorchScriptHTDemucs(model), None),
    "openvino": (lambda model, threads: OpenVinoHTDemucs(model, threads), None),
    "openvino-1thread": (lambda model, threads: OpenVinoHTDemucs(model, 1), None),
}

# name -> (environment additions, command prefix) for --env-variants
ENV_VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "default": ({}, []),
    "omp_passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "omp_active": ({"OMP_WAIT_POLICY": "ACTIVE"}, []),
    "omp_bind": ({"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}, []),
    "gomp_spin0": ({"GOMP_SPINCOUNT": "0"}, []),
    "taskset01": ({}, ["taskset", "-c", "0,1"]),
    "malloc_arena1": ({"MALLOC_ARENA_MAX": "1"}, []),
}


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    error: float = 0.0  # max over windows of max |diff| / peak against eager

    def median(self) -> float:
        return statistics.median(self.seconds)


def windows(n: int) -> list[torch.Tensor]:
    """n windows (1, 2, training length) of real music, standardised, from a song's plan."""
    model_length = int(HTDEMUCS_SEGMENT_S * SAMPLE_RATE)
    track = song(max(SONG_S, n * 6.0 + 8))
    plan = plan_chunks(track.shape[1], model_length, 0.25, lambda length: model_length)
    norm = standardisation(track)
    return [torch.from_numpy(chunk_window(track, c, norm))[None] for c in plan.chunks[1 : n + 1]]


def windows_per_song() -> int:
    length = int(HTDEMUCS_SEGMENT_S * SAMPLE_RATE)
    return len(plan_chunks(int(SONG_S * SAMPLE_RATE), length, 0.25, lambda n: length).chunks)


def run_variants(names: list[str], rounds: int, n_windows: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    model = fx.htdemucs(fx.FOUR, 12, **fx.FULL)
    inputs = windows(n_windows)
    with torch.no_grad():
        reference = [model(x) for x in inputs]
        forwards: dict[str, nn.Module] = {}
        for name in names:
            build, _ = VARIANTS[name]
            start = time.perf_counter()
            try:
                forwards[name] = build(model, threads)
                torch.set_num_threads(VARIANTS[name][1] or threads)
                forwards[name](torch.zeros_like(inputs[0]))  # compiles, where it compiles
            except Exception as e:  # a variant that cannot build is reported, not fatal
                print(f"{name}: failed to build: {type(e).__name__}: {str(e)[:300]}", flush=True)
                continue
            finally:
                torch.set_num_threads(threads)
            print(f"{name}: built in {time.perf_counter() - start:.1f}s", flush=True)
        timings = {name: Timing() for name in forwards}
        order = list(forwards)
        for r in range(rounds):
            k = r % len(inputs)
            for name in order[r % len(order) :] + order[: r % len(order)]:
                torch.set_num_threads(VARIANTS[name][1] or threads)
                start = time.perf_counter()
                out = forwards[name](inputs[k])
                timings[name].seconds.append(time.perf_counter() - start)
                torch.set_num_threads(threads)
                want = reference[k]
                error = float((out - want).abs().max() / want.abs().max())
                timings[name].error = max(timings[name].error, error)
            print(f"round {r + 1}/{rounds} done", flush=True)
    return {name: {"seconds": t.seconds, "error": t.error} for name, t in timings.items()}


def report(results: dict, baseline: str) -> None:
    per_song = windows_per_song()
    eager = statistics.median(results["eager"]["seconds"]) if "eager" in results else None
    base = statistics.median(results[baseline]["seconds"]) if baseline in results else None
    print(f"\nmedians; RTF for {SONG_S:.0f} s = {per_song} windows x s/window / {SONG_S:.0f} s")
    print(f"{'variant':30s} {'s/window':>9s} {'RTF':>6s} {'x eager':>8s} {'x ' + baseline:>12s}")
    for name, r in results.items():
        t = statistics.median(r["seconds"])
        vs_eager = f"{eager / t:.2f}" if eager else "-"
        vs_base = f"{base / t:.2f}" if base else "-"
        adopt = ""
        if base and name != baseline and base / t >= ADOPT_SPEEDUP and r["error"] <= ADOPT_ERROR:
            adopt = "  <- meets the bar"
        print(
            f"{name:30s} {t:9.3f} {t * per_song / SONG_S:6.3f} {vs_eager:>8s} {vs_base:>12s}"
            f"  max|diff|/peak {r['error']:.1e}  (n={len(r['seconds'])}){adopt}"
        )


def run_env_variants(names: list[str], rounds: int, threads: int) -> dict:
    results: dict[str, dict] = {name: {"seconds": [], "error": 0.0} for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            extra_env, prefix = ENV_VARIANTS[name]
            command = [
                *prefix,
                sys.executable,
                __file__,
                "--variants",
                "inductor",
                "--rounds",
                "2",
                "--windows",
                "1",
                "--threads",
                str(threads),
                "--json",
            ]
            done = subprocess.run(
                command, env={**os.environ, **extra_env}, capture_output=True, text=True
            )
            if done.returncode != 0:
                print(f"{name}: child failed:\n{done.stderr[-2000:]}", flush=True)
                continue
            child = json.loads(done.stdout.strip().splitlines()[-1])["inductor"]
            results[name]["seconds"] += child["seconds"]
            results[name]["error"] = max(results[name]["error"], child["error"])
            print(f"round {r + 1}/{rounds} {name}: {child['seconds']}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="eager,inductor,inductor-cpp_wrapper,openvino")
    parser.add_argument("--env-variants", default="")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the raw timings as JSON")
    args = parser.parse_args()
    env_names = [n for n in args.env_variants.split(",") if n]
    names = [n for n in args.variants.split(",") if n]
    unknown = (set(names) - set(VARIANTS)) | (set(env_names) - set(ENV_VARIANTS))
    if unknown:
        parser.error(
            f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}; "
            f"env: {', '.join(ENV_VARIANTS)}"
        )
    if not args.json:
        print(
            f"{os.cpu_count()} cpus, torch {torch.__version__}, {args.threads} torch threads, "
            f"{args.rounds} rounds over {args.windows} windows of 7.8 s, full-size htdemucs",
            flush=True,
        )
    if env_names:
        results = run_env_variants(env_names, args.rounds, args.threads)
        report(results, "default")
        return
    results = run_variants(names, args.rounds, args.windows, args.threads)
    if args.json:
        print(json.dumps(results))
        return
    report(results, "inductor")


if __name__ == "__main__":
    main()
