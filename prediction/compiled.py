"""HTDemucs with its real-valued core compiled by `torch.compile` (inductor), for the CPU.

`HTDemucs.forward` is: STFT -> complex-as-channels magnitude -> frequency and time encoders,
cross-transformer, decoders (all real-valued: nearly all of the time) -> mask (back to complex)
-> iSTFT. Inductor compiles the real part well and the STFT and complex ops badly, so only the
middle is compiled: `HTDemucsCore` restates that middle of `HTDemucs.forward` (demucs 4.1.0)
line for line, calling the model's own submodules in the same order, and `CompiledHTDemucs`
runs the whole forward with the STFT, mask and iSTFT eager around the compiled core.

The input shape never changes on the CPU (one window of the training length), so the core is
compiled for that one shape (`dynamic=False`) with frozen weights, once per process, by a
warm-up forward at load time. A check on a noise window then compares it with the eager
forward; any failure to compile (no C++ compiler, an op inductor cannot lower, a mismatch)
leaves the model eager and says so in a warning: compiling only ever makes a model faster.
Inductor's cache is kept under the models dir, so a restarted service reloads in seconds.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from demucs.htdemucs import HTDemucs
from einops import rearrange
from torch import nn

log = logging.getLogger("audiosplit.compiled")

COMPILE_SETTINGS = ("auto", "on", "off")
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
CHECK_TOLERANCE = 1e-5  # max |compiled - eager| / peak |eager| on the check window
CHECK_SEED = 1234


@dataclass(frozen=True)
class CompileOptions:
    """How the core is compiled. `mode`: an inductor mode ("default",
    "max-autotune-no-cudagraphs", ...); `freezing`: weights folded in as constants (inference
    only; they are the model's at compile time)."""

    mode: str = "default"
    freezing: bool = True

    def inductor_options(self) -> dict:
        from torch._inductor import list_mode_options

        return {**list_mode_options(self.mode), "freezing": self.freezing}


# --- when to compile --------------------------------------------------------------------------


def c_compiler() -> str | None:
    """The C++ compiler inductor would use (honours `CXX`), or None when there is none."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    # InvalidCxxCompiler, or whatever an unusual platform raises while looking: none usable.
    except Exception:
        return None


def should_compile(setting: str, device: str) -> tuple[bool, str]:
    """(compile?, why not) for the `compile_models` setting on `device`.

    "auto" compiles on the CPU when a C++ compiler is found: there the core is ~1.4x faster
    and the input shape never changes. Elsewhere it stays eager (an accelerator's batches vary
    in size, and inductor's GPU path needs Triton). "on" compiles wherever inductor can.
    """
    wanted = setting.strip().lower()
    if wanted not in COMPILE_SETTINGS:
        raise ValueError(
            f"compile_models must be one of {', '.join(COMPILE_SETTINGS)}, got {setting!r}"
        )
    if wanted == "off":
        return False, "compile_models=off"
    if wanted == "auto" and device != "cpu":
        return False, f"compile_models=auto compiles on the cpu only, not on {device}"
    if device == "cpu" and c_compiler() is None:
        return False, "no C++ compiler found (inductor needs one on the cpu; see CXX)"
    return True, ""


def use_inductor_cache(models_dir: Path) -> Path | None:
    """Point inductor's on-disk cache at `<models_dir>/torchinductor` unless
    `TORCHINDUCTOR_CACHE_DIR` is already set; the directory in use, or None where the models
    dir cannot hold it (a read-only mount, another owner): inductor then keeps its default
    under the temp dir, which lasts only as long as the machine or container.

    Inductor reads the variable on every use (and sets it to its /tmp default on first use),
    so this must run before the first compile of the process to take effect.
    """
    if os.environ.get(INDUCTOR_CACHE_ENV):
        return Path(os.environ[INDUCTOR_CACHE_ENV])
    wanted = Path(models_dir).expanduser() / "torchinductor"
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        writable = os.access(wanted, os.W_OK | os.X_OK)
    except OSError:
        writable = False
    if not writable:
        log.warning("cannot write the inductor cache to %s; using inductor's default", wanted)
        return None
    os.environ[INDUCTOR_CACHE_ENV] = str(wanted)
    return wanted


# --- the model --------------------------------------------------------------------------------


class HTDemucsCore(nn.Module):
    """The real-valued middle of `HTDemucs.forward` (eval, complex-as-channels).

    mag (batch, 2 * audio_channels, bins, frames): `model._magnitude(model._spec(mix))`;
    mix (batch, audio_channels, length) -> x (batch, n_stems, 2 * audio_channels, bins, frames),
    the spectrogram estimate `_mask` takes, and xt (batch, n_stems, audio_channels, length),
    the time branch's estimate.
    """

    def __init__(self, model: HTDemucs):
        super().__init__()
        self.model = model

    def forward(self, mag: torch.Tensor, mix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        x = mag
        B, C, Fq, T = x.shape

        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)

        xt = mix
        meant = xt.mean(dim=(1, 2), keepdim=True)
        stdt = xt.std(dim=(1, 2), keepdim=True)
        xt = (xt - meant) / (1e-5 + stdt)

        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(m.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(m.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = m.tencoder[idx]
                xt = tenc(xt)
                if not tenc.empty:
                    saved_t.append(xt)
                else:
                    inject = xt  # the branches merge here
            x = encode(x, inject)
            if idx == 0 and m.freq_emb is not None:
                frs = torch.arange(x.shape[-2], device=x.device)
                emb = m.freq_emb(frs).t()[None, :, :, None].expand_as(x)
                x = x + m.freq_emb_scale * emb
            saved.append(x)

        if m.crosstransformer:
            if m.bottom_channels:
                f = x.shape[2]
                x = rearrange(x, "b c f t-> b c (f t)")
                x = m.channel_upsampler(x)
                x = rearrange(x, "b c (f t)-> b c f t", f=f)
                xt = m.channel_upsampler_t(xt)
            x, xt = m.crosstransformer(x, xt)
            if m.bottom_channels:
                x = rearrange(x, "b c f t-> b c (f t)")
                x = m.channel_downsampler(x)
                x = rearrange(x, "b c (f t)-> b c f t", f=f)
                xt = m.channel_downsampler_t(xt)

        for idx, decode in enumerate(m.decoder):
            skip = saved.pop(-1)
            x, pre = decode(x, skip, lengths.pop(-1))
            offset = m.depth - len(m.tdecoder)
            if idx >= offset:
                tdec = m.tdecoder[idx - offset]
                length_t = lengths_t.pop(-1)
                if tdec.empty:
                    xt, _ = tdec(pre[:, :, 0], None, length_t)
                else:
                    xt, _ = tdec(xt, saved_t.pop(-1), length_t)

        S = len(m.sources)
        x = x.view(B, S, -1, Fq, T)
        x = x * std[:, None] + mean[:, None]
        xt = xt.view(B, S, -1, mix.shape[-1])
        xt = xt * stdt[:, None] + meant[:, None]
        return x, xt


def supports(model: nn.Module) -> tuple[bool, str]:
    """Whether `CompiledHTDemucs` reproduces `model`'s forward, and if not why."""
    if not isinstance(model, HTDemucs):
        return False, f"{type(model).__name__} is not an HTDemucs"
    if not model.cac:
        return False, "HTDemucs without complex-as-channels (Wiener masking)"
    if not model.use_train_segment:
        return False, "HTDemucs without a fixed training length"
    return True, ""


class CompiledHTDemucs(nn.Module):
    """`model`'s forward with its core compiled for one window: mix (batch, 2, training length)
    on `device`, without autograd -> (batch, n_stems, 2, training length), one window at a
    time (batching measured slower on the CPU). Any other input (another length or device,
    gradients) runs the eager model, so nothing ever recompiles in a request."""

    def __init__(self, model: HTDemucs, device: str, options: CompileOptions):
        super().__init__()
        ok, why = supports(model)
        if not ok:
            raise ValueError(f"cannot compile the core of this model: {why}")
        self.model = model
        self.length = int(model.segment * model.samplerate)
        self.window = (model.audio_channels, self.length)
        self.device = torch.device(device)
        self.core = torch.compile(
            HTDemucsCore(model),
            fullgraph=True,
            dynamic=False,
            options=options.inductor_options(),
        )

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        if (
            tuple(mix.shape[1:]) != self.window
            or mix.device != self.device
            or torch.is_grad_enabled()
            or self.model.training
        ):
            return self.model(mix)
        return torch.cat([self.forward_one(one) for one in mix.split(1)])

    def forward_one(self, mix: torch.Tensor) -> torch.Tensor:
        """(1, 2, training length) -> (1, n_stems, 2, training length)"""
        m = self.model
        z = m._spec(mix)
        x, xt = self.core(m._magnitude(z), mix)
        return xt + m._ispec(m._mask(z, x), self.length)


# --- compiling at load time -------------------------------------------------------------------


def compile_htdemucs(
    model: HTDemucs, device: str = "cpu", options: CompileOptions | None = None
) -> CompiledHTDemucs:
    """`model` with a compiled core, warmed up and checked against its eager forward.

    Compiles on a zero window (so the cost is paid here, at load), then runs one seeded noise
    window both ways and raises RuntimeError when they differ by more than CHECK_TOLERANCE.
    """
    compiled = CompiledHTDemucs(model, device, options or CompileOptions())
    shape = (1, *compiled.window)
    with torch.no_grad():
        compiled(torch.zeros(shape, device=device))
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(CHECK_SEED))
        noise = noise.to(device)
        got, want = compiled(noise), model(noise)
    error = float((got - want).abs().max() / want.abs().max())
    if not error <= CHECK_TOLERANCE:  # also catches NaN
        raise RuntimeError(
            f"compiled forward differs from the eager one by {error:.1e} of the peak "
            f"(at most {CHECK_TOLERANCE:.0e} expected)"
        )
    return compiled


def compile_for_device(
    models: list[nn.Module],
    device: str,
    setting: str = "auto",
    cache_dir: Path | None = None,
    options: CompileOptions | None = None,
) -> tuple[list[nn.Module], list[str]]:
    """What to run for each of `models` (a bag's sub-models): compiled where `setting`, the
    device and the model allow, the model itself otherwise; and warnings for jobs when a
    compile that was asked for failed. `cache_dir`: see `use_inductor_cache`."""
    wanted, why_not = should_compile(setting, device)
    if not wanted:
        if setting.strip().lower() == "on":
            warning = f"compile_models=on but {why_not}; models run eager (slower)"
            log.warning(warning)
            return list(models), [warning]
        log.info("models run eager: %s", why_not)
        return list(models), []
    if cache_dir is not None:
        log.info("inductor cache: %s", use_inductor_cache(cache_dir) or "inductor's default")
    runners: list[nn.Module] = []
    failures: list[str] = []
    for model in models:
        ok, unsupported = supports(model)
        if not ok:
            log.info("%s runs eager: %s", type(model).__name__, unsupported)
            runners.append(model)
            continue
        start = time.perf_counter()
        try:
            runners.append(compile_htdemucs(model, device, options))
        # A compile can fail in many ways (no compiler, an op inductor cannot lower, a
        # compiler crash, a mismatch): each leaves this model eager, never the service down.
        except Exception as e:
            first_line = (str(e).strip().splitlines() or [""])[0][:300]
            failures.append(f"{type(e).__name__}: {first_line}")
            runners.append(model)
            continue
        log.info(
            "compiled the core of %s in %.1f s", type(model).__name__, time.perf_counter() - start
        )
    if not failures:
        return runners, []
    warning = (
        f"compiling {len(failures)} of {len(models)} model(s) failed ({failures[0]}); "
        "they run eager (same result, slower)"
    )
    log.warning(warning)
    return runners, [warning]
