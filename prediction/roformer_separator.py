"""BS-RoFormer and Mel-Band RoFormer (checkpoints of ZFTurbo's Music-Source-Separation-Training,
MSST: a `.ckpt` state dict and its YAML config) as a `Separator`.

The architecture is lucidrains' `BS-RoFormer` package (`bs_roformer.BSRoformer`,
`bs_roformer.MelBandRoformer`), at the 0.4 line whose modules and parameter names are the
ones MSST's checkpoints hold. A model is named by the path of its checkpoint (its config beside
it: same name, `.yaml`) or by a name of `CHECKPOINTS`, whose files live in `<models>/roformer/`
and are fetched on first use from their published URLs (or the mirror ROFORMER_ROOT_URL
names): the config first, read as a config, then the checkpoint, its SHA-256 checked where one
is pinned and loaded into the config's network before it is renamed into place.

MSST's reference inference (`utils.model_utils.demix`, generic mode) reflect-pads the track,
runs chunks of `inference.chunk_size` (or `audio.chunk_size`) frames every
`chunk // num_overlap`, fades each with `chunk // 10` linear ramps and divides by the summed
fades (`common.chunks.fade_grid`). Here a job's chunk is a stretch of the track with one MSST
chunk of real audio on each side: the separator runs every MSST chunk that meets the stretch,
rebuilt from the window as the reference builds it, and fuses them as the reference does, so
each stretch is the reference's result there, whatever the job's plan; the fuser's cross-fade
of equal stretches changes nothing (one-model jobs use no overlap at all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.chunks import fade_chunk_input, fade_grid, fade_overlap_add
from common.config import Settings
from common.errors import BadRequest, ModelUnavailable
from common.interfaces import ChunkSpec, SeparatorInfo
from prediction.devices import TorchSeparator, configure_threads, pick_device
from prediction.download import Expected, download_failed, fetch_refusal, fetch_url
from prediction.roformer_networks import build_model, load_weights, read_config

SEGMENT_CHUNKS = 4  # a job's chunk: this many MSST chunks of centre
OVERLAP = 0.0  # each job chunk is already the reference's result on its centre
DEFAULT_CHUNK = 352800  # frames (8 s): the published configs' chunk, told before one is read


@dataclass(frozen=True)
class Checkpoint:
    """A published RoFormer checkpoint: where its two files come from, as published."""

    architecture: str  # "bs_roformer" or "mel_band_roformer"
    checkpoint_url: str
    config_url: str
    stems: tuple[str, ...]  # as the config names them (target + residual, or its instruments)
    sha256: str | None = None  # None: not published
    licence: str = "not stated"
    published_sdr: str | None = None
    # Our names for outputs whose config names are obscure (config instrument -> our stem),
    # applied wherever the stems are listed (`Inference.stems`, `model_info`): a chained part
    # is `<stem>-<model stem>`, so `vocals>mel_band_roformer_karaoke` gives `vocals-lead`.
    rename: dict[str, str] = field(default_factory=dict)

    @property
    def our_stems(self) -> list[str]:
        return [self.rename.get(s, s) for s in self.stems]

    def urls(self, mirror: str) -> dict[str, str]:
        """file name -> URL, as published or under `mirror` (ROFORMER_ROOT_URL: a mirror, a
        test's hub; empty: none)."""
        root = mirror.rstrip("/")
        urls = (self.checkpoint_url, self.config_url)
        return {Path(u).name: (f"{root}/{Path(u).name}" if root else u) for u in urls}

    @property
    def files(self) -> tuple[str, str]:
        return Path(self.checkpoint_url).name, Path(self.config_url).name


MUSDB_INSTRUMENTS = ("drums", "bass", "other", "vocals")  # MSST's MUSDB18 configs' order
MSST_CONFIGS = "https://raw.githubusercontent.com/ZFTurbo/Music-Source-Separation-Training/main"
MSST_RELEASES = "https://github.com/ZFTurbo/Music-Source-Separation-Training/releases/download"
AUDIO_SEPARATOR_RELEASE = (
    "https://github.com/nomadkaraoke/python-audio-separator/releases/download/model-configs"
)
CHECKPOINTS = {
    # MSST's docs/pretrained_models.md, "Vocal models".
    "bs_roformer_viperx": Checkpoint(
        architecture="bs_roformer",
        checkpoint_url="https://github.com/TRvlvr/model_repo/releases/download/"
        "all_public_uvr_models/model_bs_roformer_ep_317_sdr_12.9755.ckpt",
        config_url=f"{MSST_CONFIGS}/configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml",
        stems=("vocals", "other"),
        published_sdr="vocals 10.87 (Multisong, MSST's table)",
    ),
    "mel_band_roformer_kj": Checkpoint(
        architecture="mel_band_roformer",
        checkpoint_url="https://huggingface.co/KimberleyJSN/melbandroformer/resolve/main/"
        "MelBandRoformer.ckpt",
        config_url=f"{MSST_CONFIGS}/configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml",
        stems=("vocals", "other"),
        published_sdr="vocals 10.98 (Multisong, MSST's table)",
    ),
    # MSST's docs/pretrained_models.md, "Multi-stem models (MUSDB18HQ)": trained on MUSDB18-HQ
    # only. Stems in the config's `training.instruments` order (drums, bass, other, vocals; no
    # target), as the published 384_8_2_485100 config lists them.
    "bs_roformer_musdb18": Checkpoint(
        architecture="bs_roformer",
        checkpoint_url=f"{MSST_RELEASES}/v1.0.12/model_bs_roformer_ep_17_sdr_9.6568.ckpt",
        config_url=f"{MSST_RELEASES}/v1.0.12/config_bs_roformer_384_8_2_485100.yaml",
        stems=MUSDB_INSTRUMENTS,
        published_sdr="MUSDB18 test avg 9.65 (bass 8.48, drums 11.61, vocals 11.08, other "
        "7.44); Multisong avg 9.38 (MSST's table)",
    ),
    # MSST's docs/mel_roformer_experiments.md (linked from pretrained_models.md, "MelRoformer
    # models"): Mel-Band RoFormers trained on MUSDB18-HQ's train set, scored on its test set;
    # this is the best one of a single file whose network the package builds (dim 256, depth 4,
    # mlp_expansion_factor 1, no skip connection; 58.3 M parameters, a 234 MB checkpoint).
    "mel_band_roformer_musdb18": Checkpoint(
        architecture="mel_band_roformer",
        checkpoint_url=f"{MSST_RELEASES}/v1.0.11/model_mel_band_roformer_ep_1_sdr_8.2175.ckpt",
        config_url=f"{MSST_RELEASES}/v1.0.11/model_mel_band_roformer_ep_1_sdr_8.2175.yaml",
        stems=MUSDB_INSTRUMENTS,
        published_sdr="MUSDB18 test avg 8.22 (MSST's Mel-Band RoFormer experiments table; "
        "per stem not published)",
    ),
    # Lead vs backing vocals, by aufr33 & viperx: not in MSST's list; audio-separator's
    # models.json ("Roformer Model: Mel-Roformer-Karaoke-Aufr33-Viperx") fetches the checkpoint
    # from UVR's model repository. Its config as first published (jarredou's Hugging Face
    # repository, now gone) names the outputs `karaoke` (the target) and `other`;
    # audio-separator's copy names them Vocals / Instrumental in that order, and the projects
    # that use the model take the target for the lead voice: on a vocals stem `karaoke` is the
    # lead and `other` the backing vocals. The config is MSST-WebUI's copy, pinned to the
    # commit whose text test/resources/roformer/ keeps.
    "mel_band_roformer_karaoke": Checkpoint(
        architecture="mel_band_roformer",
        checkpoint_url="https://github.com/TRvlvr/model_repo/releases/download/"
        "all_public_uvr_models/mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956.ckpt",
        config_url="https://raw.githubusercontent.com/SUC-DriverOld/MSST-WebUI/"
        "2e6255b5cb9ab8b75bff29cfa4c97984b2ddff51/configs_backup/vocal_models/"
        "model_mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956.ckpt.yaml",
        stems=("karaoke", "other"),
        rename={"karaoke": "lead", "other": "backing"},
        published_sdr="10.1956 in the checkpoint's name (its authors' validation SDR; data "
        "and stem not stated; no figure in MSST's or audio-separator's lists)",
    ),
    # MSST's docs/pretrained_models.md, "Single stem models": anvuew's de-reverb. The config
    # names the outputs `noreverb` (the target) and `reverb`.
    "mel_band_roformer_dereverb": Checkpoint(
        architecture="mel_band_roformer",
        checkpoint_url="https://huggingface.co/anvuew/dereverb_mel_band_roformer/resolve/main/"
        "dereverb_mel_band_roformer_anvuew_sdr_19.1729.ckpt",
        config_url="https://huggingface.co/anvuew/dereverb_mel_band_roformer/resolve/main/"
        "dereverb_mel_band_roformer_anvuew.yaml",
        stems=("noreverb", "reverb"),
        rename={"noreverb": "dry"},
        published_sdr="--- in MSST's table; 19.1729 in the checkpoint's name (its author's "
        "validation SDR)",
    ),
    # MSST's docs/pretrained_models.md, "Single stem models": aufr33's de-noise (the table's
    # "MelBand Roformer Denoise"; the aggressive one shares its config). The config names the
    # outputs `dry` (the target: the music without the noise) and `other`.
    "mel_band_roformer_denoise": Checkpoint(
        architecture="mel_band_roformer",
        checkpoint_url=f"{MSST_RELEASES}/v.1.0.7/denoise_mel_band_roformer_aufr33_sdr_27.9959.ckpt",
        config_url=f"{MSST_RELEASES}/v.1.0.7/model_mel_band_roformer_denoise.yaml",
        stems=("dry", "other"),
        rename={"dry": "clean", "other": "noise"},
        published_sdr="--- in MSST's table; 27.9959 in the checkpoint's name (its author's "
        "validation SDR)",
    ),
    # BS-RoFormer SW: six stems in the config's `training.instruments` order, no target. Not in
    # MSST's list; audio-separator lists it ("BS Roformer SW by jarredou") and serves both files
    # from its model-configs release (the first host, jarredou's BS-ROFO-SW-Fixed on Hugging
    # Face, refuses downloads; its uploader says he renamed the keys, not that he trained it).
    "bs_roformer_sw": Checkpoint(
        architecture="bs_roformer",
        checkpoint_url=f"{AUDIO_SEPARATOR_RELEASE}/BS-Roformer-SW.ckpt",
        config_url=f"{AUDIO_SEPARATOR_RELEASE}/BS-Roformer-SW.yaml",
        stems=("bass", "drums", "other", "vocals", "guitar", "piano"),
        published_sdr=None,
    ),
}


def roformer_dir(settings: Settings) -> Path:
    return Path(settings.models_dir) / "roformer"


def rename_of(name: str) -> dict[str, str]:
    """A registry name's renamed outputs (`Checkpoint.rename`); none for a checkpoint path."""
    return CHECKPOINTS[name].rename if name in CHECKPOINTS else {}


def config_beside(checkpoint: Path) -> Path | None:
    """The YAML config next to a checkpoint (same name), or None."""
    for suffix in (".yaml", ".yml"):
        if checkpoint.with_suffix(suffix).is_file():
            return checkpoint.with_suffix(suffix)
    return None


def files_of(name: str, settings: Settings) -> tuple[Path, Path | None]:
    """(checkpoint, config) of a registry name or a checkpoint path."""
    if name in CHECKPOINTS:
        ckpt, config = CHECKPOINTS[name].files
        return roformer_dir(settings) / ckpt, roformer_dir(settings) / config
    path = Path(name).expanduser()
    return path, config_beside(path)


@dataclass(frozen=True)
class Inference:
    """What MSST's `demix` reads from a config."""

    chunk: int  # frames
    num_overlap: int
    batch_size: int
    target: str | None  # training.target_instrument: the model's one output
    instruments: tuple[str, ...]
    normalise: bool
    rename: dict[str, str] = field(default_factory=dict)  # `Checkpoint.rename`

    @classmethod
    def of(cls, config: dict, rename: dict[str, str] | None = None) -> Inference:
        inference, training = config["inference"], config["training"]
        if int(config["audio"].get("sample_rate", 44100)) != 44100:
            raise ModelUnavailable("the RoFormer config is not for 44.1 kHz audio")
        return cls(
            chunk=int(inference.get("chunk_size", config["audio"]["chunk_size"])),
            num_overlap=int(inference["num_overlap"]),
            batch_size=int(inference.get("batch_size", 1)),
            target=training.get("target_instrument") or None,
            instruments=tuple(training["instruments"]),
            normalise=bool(inference.get("normalize", False)),
            rename=dict(rename or {}),
        )

    @property
    def stems(self) -> list[str]:
        """The model's outputs; a one-target model also gives the mix minus the target (MSST's
        `--extract_instrumental`), named by the config's other instrument, or `no_<target>`;
        then renamed as `rename` says."""
        if self.target is None:
            names = list(self.instruments)
        else:
            rest = [s for s in self.instruments if s != self.target]
            names = [self.target, rest[0] if len(rest) == 1 else f"no_{self.target}"]
        return [self.rename.get(s, s) for s in names]


def model_info(
    name: str, inference: Inference | None, *, available: bool, reason: str
) -> SeparatorInfo:
    """`inference`: None while the config is not there to read."""
    chunk = inference.chunk if inference else DEFAULT_CHUNK
    if inference:
        stems = inference.stems
    else:
        stems = CHECKPOINTS[name].our_stems if name in CHECKPOINTS else []
    return SeparatorInfo(
        name=name,
        family="roformer",
        stems=stems,
        available=available,
        reason=reason,
        segment=SEGMENT_CHUNKS * chunk,
        overlap=OVERLAP,
        normalise=bool(inference and inference.normalise),
    )


def probe_files(name: str, settings: Settings) -> SeparatorInfo:
    """Whether the checkpoint and its config are on disk, without loading the weights."""
    checkpoint, config = files_of(name, settings)
    missing = [p for p in (checkpoint, config) if p is None or not p.is_file()]
    if missing:
        where = roformer_dir(settings) if name in CHECKPOINTS else checkpoint.parent
        wanted = ", ".join(p.name for p in missing if p is not None) or (
            f"{checkpoint.with_suffix('.yaml').name} (its config)"
        )
        reason = f"{name}: not found: expected {wanted} in {where}/."
        if name in CHECKPOINTS:
            entry = CHECKPOINTS[name]
            reason += f" Download {entry.checkpoint_url} and {entry.config_url} there."
        return model_info(name, None, available=False, reason=reason)
    inference = Inference.of(read_config(config), rename_of(name))
    return model_info(name, inference, available=True, reason=f"{name}: found {checkpoint}")


def probe(name: str, settings: Settings) -> SeparatorInfo:
    """Whether the files are here; a registry name's missing files may be fetchable."""
    info = probe_files(name, settings)
    if info.available or name not in CHECKPOINTS:
        return info
    refusal = fetch_refusal(settings, list(published_urls(name, settings).values()))
    if refusal is not None:
        return info.model_copy(update={"reason": f"{info.reason} Not fetched: {refusal}."})
    where = roformer_dir(settings)
    reason = f"{name}: weights not here yet (in {where}/): downloaded on first use."
    return info.model_copy(update={"fetchable": True, "reason": reason})


def published_urls(name: str, settings: Settings) -> dict[str, str]:
    return CHECKPOINTS[name].urls(settings.roformer_root_url)


def download_plan(name: str, settings: Settings) -> list[list[Expected]]:
    """The files `download` writes, for its progress (`<file>.<hex>.partial`, then `<file>`)."""
    return [
        [Expected(roformer_dir(settings), f, u) for f, u in published_urls(name, settings).items()]
    ]


def download(name: str, settings: Settings) -> None:
    """Fetch a registry name's config, then its checkpoint, into `<models>/roformer/`."""
    entry = CHECKPOINTS[name]
    checkpoint, config_path = files_of(name, settings)

    def loads(config: dict, path: Path) -> None:
        load_weights(build_model(config, entry.architecture), path, name, config_path)

    urls = published_urls(name, settings)
    fetch_files(name, (checkpoint, config_path), urls, entry.sha256, settings, loads)


def fetch_files(
    name: str,
    files: tuple[Path, Path],
    urls: dict[str, str],
    sha256: str | None,
    settings: Settings,
    loads: Callable[[dict, Path], None],
) -> None:
    """Fetch an MSST model's files (checkpoint, config): the config first, read as a config,
    then the checkpoint, checked by `loads(config, path)` (it loads into the config's network);
    each is renamed into place only once whole and usable. Raises ModelUnavailable saying what
    to do."""
    checkpoint, config_path = files
    timeout = settings.fetch_timeout_s
    try:
        if not config_path.is_file():
            fetch_url(urls[config_path.name], config_path, timeout, check=read_config)
        if not checkpoint.is_file():
            config = read_config(config_path)
            fetch_url(
                urls[checkpoint.name],
                checkpoint,
                timeout,
                sha256,
                check=lambda path: loads(config, path),
            )
    except Exception as e:
        raise download_failed(name, e, timeout) from e


def load(name: str, settings: Settings) -> RoformerSeparator:
    info = probe_files(name, settings)
    if not info.available:
        raise ModelUnavailable(info.reason)
    checkpoint, config_path = files_of(name, settings)
    config = read_config(config_path)
    architecture = CHECKPOINTS[name].architecture if name in CHECKPOINTS else None
    model = build_model(config, architecture)
    load_weights(model, checkpoint, name, config_path)
    device, warnings = pick_device(settings.device)
    configure_threads(settings.torch_threads)
    return RoformerSeparator(
        name,
        model,
        Inference.of(config, rename_of(name)),
        device,
        batch_size=settings.predictor_batch_size or None,
        reason=info.reason,
        warnings=warnings,
    )


class RoformerSeparator(TorchSeparator):
    """(batch, 2, window) -> (batch, n_stems, 2, window): MSST's result on each window's
    centre (zeros around it), a window being its centre with `chunk` frames on each side."""

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        inference: Inference,
        device: str = "cpu",
        *,
        batch_size: int | None = None,
        reason: str = "",
        warnings: list[str] | None = None,
    ):
        self.model = model
        self.inference = inference
        super().__init__([model], device, batch_size, warnings)
        self.info = model_info(name, inference, available=True, reason=reason or f"{name}: loaded")

    def padded_length(self, length: int) -> int:
        return length + 2 * self.inference.chunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, 2, chunk) -> (batch, n_model_outputs, 2, chunk)."""
        out = self.model(x)
        return out[:, None] if out.ndim == 3 else out

    def separate(self, windows: np.ndarray) -> np.ndarray:
        raise BadRequest("a RoFormer needs to know where its windows sit: use separate_chunks")

    def separate_chunks(
        self, windows: np.ndarray, chunks: list[ChunkSpec]
    ) -> tuple[np.ndarray, list[str]]:
        self.check_windows(windows)
        stems, warnings = [], []
        for window, chunk in zip(windows, chunks, strict=True):
            out, said = self.separate_centre(window, chunk)
            stems.append(out)
            warnings += [w for w in said if w not in warnings]
        return np.stack(stems), warnings

    def separate_centre(self, window: np.ndarray, chunk: ChunkSpec) -> tuple[np.ndarray, list]:
        """(2, window) -> (n_stems, 2, window): the reference's stems on the chunk's centre."""
        if chunk.pass_frames is None:
            raise BadRequest(f"chunk {chunk.index} does not say how long its pass is")
        inf = self.inference
        if chunk.window_length != self.padded_length(chunk.length):
            raise BadRequest(
                f"chunk {chunk.index}: window {chunk.window_length} frames, "
                f"expected {self.padded_length(chunk.length)}"
            )
        grid = fade_grid(chunk.pass_frames, inf.chunk, inf.num_overlap, inf.batch_size)
        lo, hi = chunk.offset, chunk.offset + chunk.length
        needed = grid.touching(lo, hi)
        inputs = np.stack([fade_chunk_input(grid, k, window, chunk.window_start) for k in needed])
        outputs, warnings = self.separate_with_warnings(inputs)
        centre = fade_overlap_add(grid, dict(zip(needed, outputs, strict=True)), lo, hi)
        if len(self.info.stems) > centre.shape[0]:
            mix = window[:, lo - chunk.window_start : hi - chunk.window_start]
            centre = np.concatenate([centre, (mix - centre[0])[None]])
        out = np.zeros((centre.shape[0], 2, chunk.window_length), dtype=np.float32)
        left = (chunk.window_length - chunk.length) // 2  # where `center_trim` looks
        out[..., left : left + chunk.length] = centre
        return out, warnings
