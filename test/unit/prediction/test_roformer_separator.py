"""The RoFormer family: checkpoints + MSST configs found by name or by path, loaded into the
package's networks, and the job's chunks (plan, windows, `separate_chunks`, the fuser's
overlap-add) equal to MSST's `demix` on real music.

Models are the configs' architectures with random weights, written where a download would
land (`<models>/roformer/`). `msst_demix` is MSST's reference inference (utils/model_utils.py,
generic mode) written here from reading it, in torch as there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml

from common.chunks import chunk_window, plan_chunks
from common.config import Settings
from common.errors import InvalidOption, ModelUnavailable
from common.interfaces import FuseJob, Normalisation
from prediction import roformer_networks as rn
from prediction import roformer_separator as rs
from prediction.fusion import JobAccumulator
from prediction.registry import ModelRegistry
from test.separation_fixtures import TOLERANCE, real_music, relative_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
TRAINING = {"instruments": ["vocals", "other"], "target_instrument": "vocals"}
# MSST's configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml (model, inference, chunk)
VIPERX_BS = {
    "audio": {"chunk_size": 352800, "sample_rate": 44100, "num_channels": 2},
    "model": {
        "dim": 512,
        "depth": 12,
        "stereo": True,
        "num_stems": 1,
        "time_transformer_depth": 1,
        "freq_transformer_depth": 1,
        "linear_transformer_depth": 0,
        "freqs_per_bands": BANDS,
        "dim_head": 64,
        "heads": 8,
        "attn_dropout": 0.1,
        "ff_dropout": 0.1,
        "flash_attn": True,
        "dim_freqs_in": 1025,
        "stft_n_fft": 2048,
        "stft_hop_length": 441,
        "stft_win_length": 2048,
        "stft_normalized": False,
        "mask_estimator_depth": 2,
        "multi_stft_resolution_loss_weight": 1.0,
        "multi_stft_resolutions_window_sizes": (4096, 2048, 1024, 512, 256),
        "multi_stft_hop_size": 147,
        "multi_stft_normalized": False,
    },
    "training": TRAINING,
    "inference": {"batch_size": 4, "dim_t": 801, "num_overlap": 2},
}
# MSST's configs/config_musdb18_bs_roformer.yaml (71 M parameters with four outputs)
MUSDB18_BS = {
    "audio": {"chunk_size": 131584, "sample_rate": 44100, "num_channels": 2},
    "model": {**VIPERX_BS["model"], "dim": 192, "depth": 6, "stft_hop_length": 512},
    "training": {
        "instruments": ["vocals", "bass", "drums", "other"],
        "target_instrument": "vocals",
    },
    "inference": {"batch_size": 1, "dim_t": 256, "num_overlap": 4},
}
# The same networks, narrow and shallow, on 1 s chunks: the default suite's size.
SMALL_BS = {
    "audio": {"chunk_size": 44100, "sample_rate": 44100},
    "model": {**VIPERX_BS["model"], "dim": 16, "depth": 1, "dim_head": 8, "heads": 2},
    "training": TRAINING,
    "inference": {"batch_size": 2, "num_overlap": 4},
}
SMALL_MEL = {
    "audio": {"chunk_size": 44100, "sample_rate": 44100},
    "model": {
        "dim": 16,
        "depth": 1,
        "stereo": True,
        "num_stems": 1,
        "time_transformer_depth": 1,
        "freq_transformer_depth": 1,
        "linear_transformer_depth": 0,
        "num_bands": 16,
        "dim_head": 8,
        "heads": 2,
        "attn_dropout": 0.1,
        "ff_dropout": 0.1,
        "flash_attn": True,
        "dim_freqs_in": 1025,
        "sample_rate": 44100,
        "stft_n_fft": 2048,
        "stft_hop_length": 441,
        "stft_win_length": 2048,
        "stft_normalized": False,
        "mask_estimator_depth": 2,
    },
    "training": TRAINING,
    # as viperx's: MSST's last batch of 4 then drops its fade-outs over real frames
    "inference": {"batch_size": 4, "num_overlap": 2},
}


MUSDB = {"instruments": ["drums", "bass", "other", "vocals"], "target_instrument": None}
# MSST's v1.0.11 release asset model_mel_band_roformer_ep_1_sdr_8.2175.yaml, the 4-stem
# mel_band_roformer_musdb18 (its audio, model, training and inference sections as published;
# read in a copy another project keeps, the release assets cannot be fetched here).
# mlp_expansion_factor 1 and MSST's parameter names: prediction/roformer_networks.py.
MEL_MUSDB18 = {
    "audio": {"chunk_size": 352800, "sample_rate": 44100, "num_channels": 2},
    "model": {
        "dim": 256,
        "depth": 4,
        "stereo": True,
        "num_stems": 4,
        "linear_transformer_depth": 0,
        "time_transformer_depth": 1,
        "freq_transformer_depth": 1,
        "num_bands": 60,
        "dim_head": 64,
        "heads": 8,
        "attn_dropout": 0,
        "ff_dropout": 0,
        "flash_attn": True,
        "dim_freqs_in": 1025,
        "sample_rate": 44100,
        "stft_n_fft": 2048,
        "stft_hop_length": 441,
        "stft_win_length": 2048,
        "stft_normalized": False,
        "mask_estimator_depth": 2,
        "multi_stft_resolution_loss_weight": 1.0,
        "multi_stft_resolutions_window_sizes": (4096, 2048, 1024, 512, 256),
        "multi_stft_hop_size": 147,
        "multi_stft_normalized": False,
        "mlp_expansion_factor": 1,
    },
    "training": MUSDB,
    "inference": {"batch_size": 4, "dim_t": 1101, "num_overlap": 2},
}
# The 4-stem bs_roformer_musdb18 (MSST's v1.0.12 config_bs_roformer_384_8_2_485100.yaml) as
# MSST's configs/sage/config_musdb18_bs_roformer_384_8_2_485100_sage.yaml gives that network,
# with exact attention (sage_attention off): 132 M parameters, 11 s chunks.
BS_MUSDB18 = {
    "audio": {"chunk_size": 485100, "sample_rate": 44100, "num_channels": 2},
    "model": {
        **VIPERX_BS["model"],
        "dim": 384,
        "depth": 8,
        "num_stems": 4,
        "mlp_expansion_factor": 2,
        "use_torch_checkpoint": False,
        "skip_connection": False,
    },
    "training": MUSDB,
    "inference": {"batch_size": 2, "dim_t": 1101, "num_overlap": 2},
}
NARROW = {"dim": 16, "depth": 1, "dim_head": 8, "heads": 2}
SMALL_MEL_4STEM = {
    **MEL_MUSDB18,
    "audio": {"chunk_size": 44100, "sample_rate": 44100},
    "model": {**MEL_MUSDB18["model"], **NARROW},
}
SMALL_BS_4STEM = {
    **BS_MUSDB18,
    "audio": {"chunk_size": 44100, "sample_rate": 44100},
    "model": {**BS_MUSDB18["model"], **NARROW},
}


class TupleDumper(yaml.SafeDumper):
    """Writes tuples as `!!python/tuple`, as MSST's configs are written."""


TupleDumper.add_representer(
    tuple, lambda d, t: d.represent_sequence("tag:yaml.org,2002:python/tuple", t)
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(models_dir=tmp_path / "models", device="cpu", torch_threads=1)


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    track = real_music(20.0)
    if track is None:
        pytest.skip("real test music (../shared/testdata) not found")
    return track


def install(settings: Settings, name: str, config: dict, seed: int = 0) -> torch.nn.Module:
    """A random-weight network of `config`, saved (and its config) where `name`'s files go."""
    checkpoint, config_path = rs.files_of(name, settings)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = rs.build_model(config).eval()
    torch.save(rn.msst_state_dict(model), checkpoint)  # named as MSST's checkpoints are
    config_path.write_text(yaml.dump(config, Dumper=TupleDumper))
    return model


def msst_demix(model: torch.nn.Module, mix: np.ndarray, config: dict) -> np.ndarray:
    """(2, n) -> (n_outputs, 2, n): MSST's `demix` (generic mode) as it reads."""
    chunk_size = config["inference"].get("chunk_size", config["audio"]["chunk_size"])
    num_overlap = config["inference"]["num_overlap"]
    batch_size = config["inference"]["batch_size"]
    mix = torch.tensor(mix, dtype=torch.float32)
    fade_size = chunk_size // 10
    step = chunk_size // num_overlap
    border = chunk_size - step
    length_init = mix.shape[-1]
    fadein, fadeout = torch.linspace(0, 1, fade_size), torch.linspace(1, 0, fade_size)
    windowing_array = torch.ones(chunk_size)
    windowing_array[-fade_size:] = fadeout
    windowing_array[:fade_size] = fadein
    if length_init > 2 * border and border > 0:
        mix = F.pad(mix, (border, border), mode="reflect")
    with torch.inference_mode():
        result = counter = None
        i, batch_data, batch_locations = 0, [], []
        while i < mix.shape[1]:
            part = mix[:, i : i + chunk_size]
            chunk_len = part.shape[-1]
            pad_mode = "reflect" if chunk_len > chunk_size // 2 else "constant"
            part = F.pad(part, (0, chunk_size - chunk_len), mode=pad_mode, value=0)
            batch_data.append(part)
            batch_locations.append((i, chunk_len))
            i += step
            if len(batch_data) >= batch_size or i >= mix.shape[1]:
                x = model(torch.stack(batch_data, dim=0))
                x = x[:, None] if x.ndim == 3 else x
                if result is None:
                    result = torch.zeros((x.shape[1], *mix.shape))
                    counter = torch.zeros((x.shape[1], *mix.shape))
                window = windowing_array.clone()
                if i - step == 0:
                    window[:fade_size] = 1
                elif i >= mix.shape[1]:
                    window[-fade_size:] = 1
                for j, (start, seg_len) in enumerate(batch_locations):
                    result[..., start : start + seg_len] += x[j, ..., :seg_len] * window[:seg_len]
                    counter[..., start : start + seg_len] += window[:seg_len]
                batch_data.clear()
                batch_locations.clear()
        estimated = (result / counter).numpy()
        np.nan_to_num(estimated, copy=False, nan=0.0)
    if length_init > 2 * border and border > 0:
        estimated = estimated[..., border:-border]
    return estimated


def job_stems(separator: rs.RoformerSeparator, track: np.ndarray, workdir: Path) -> np.ndarray:
    """(n_stems, 2, n) as a job makes them: the predictor's plan, one window per request
    through `separate_chunks`, the fuser's files, fusing and result WAV."""
    info = separator.info
    plan = plan_chunks(track.shape[1], info.segment, info.overlap, separator.padded_length)
    job = FuseJob(
        job_id="roformer",
        plans=[plan],
        model_stems=info.stems,
        norm=Normalisation(),
        out_key="out",
    )
    fuser = JobAccumulator(workdir / "fuser", job.job_id)
    fuser.create(job)
    for chunk in plan.chunks:
        stems, _ = separator.separate_chunks(chunk_window(track, chunk)[None], [chunk])
        left = (chunk.window_length - chunk.length) // 2
        fuser.add_chunk(chunk, stems[0][..., left : left + chunk.length])
    multi, _ = sf.read(
        fuser.store.local_path(fuser.finalize().result_key), dtype="float32", always_2d=True
    )
    return multi.T.reshape(len(info.stems), 2, -1)


def reference_stems(model: torch.nn.Module, track: np.ndarray, config: dict) -> np.ndarray:
    """MSST's outputs; with a target, then the mix minus it (its `--extract_instrumental`)."""
    outputs = msst_demix(model, track, config)
    if config["training"].get("target_instrument"):
        outputs = np.stack([outputs[0], track - outputs[0]])
    return outputs


def test_probe_says_what_to_download_and_where(settings: Settings) -> None:
    info = ModelRegistry(settings).info("bs_roformer_viperx")
    assert not info.available and info.family == "roformer"
    assert str(rs.roformer_dir(settings)) in info.reason
    assert "model_bs_roformer_ep_317_sdr_12.9755.ckpt" in info.reason
    assert rs.CHECKPOINTS["bs_roformer_viperx"].config_url in info.reason
    with pytest.raises(ModelUnavailable, match="not found"):
        ModelRegistry(settings).get("mel_band_roformer_kj")


def test_unknown_name_lists_the_roformers(settings: Settings) -> None:
    with pytest.raises(InvalidOption) as err:
        ModelRegistry(settings).info("bs_roformer")
    assert "bs_roformer_viperx" in err.value.message
    assert "mel_band_roformer_kj" in err.value.message
    assert "mel_band_roformer_musdb18" in err.value.message


def test_a_checkpoint_path_with_its_config_beside_is_a_roformer(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "mine" / "model_mel.ckpt"
    path.parent.mkdir()
    torch.manual_seed(0)
    torch.save(rs.build_model(SMALL_MEL).state_dict(), path)
    assert ModelRegistry(settings).info(str(path)).family == "demucs"  # no config: Demucs'
    path.with_suffix(".yaml").write_text(yaml.dump(SMALL_MEL, Dumper=TupleDumper))
    separator = ModelRegistry(settings).get(str(path))
    assert isinstance(separator, rs.RoformerSeparator)
    assert separator.info.stems == ["vocals", "other"]
    assert type(separator.model).__name__ == "MelBandRoformer"


def test_a_checkpoint_of_another_network_is_refused(settings: Settings) -> None:
    install(settings, "bs_roformer_viperx", SMALL_BS)
    _, config_path = rs.files_of("bs_roformer_viperx", settings)
    wider = {**SMALL_BS, "model": {**SMALL_BS["model"], "dim": 24}}
    config_path.write_text(yaml.dump(wider, Dumper=TupleDumper))
    with pytest.raises(ModelUnavailable, match="does not load"):
        ModelRegistry(settings).get("bs_roformer_viperx")


def test_an_msst_variant_the_package_lacks_is_refused() -> None:
    variant = {**SMALL_BS, "model": {**SMALL_BS["model"], "skip_connection": True}}
    with pytest.raises(ModelUnavailable, match="skip_connection"):
        rs.build_model(variant)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("bs_roformer_viperx", SMALL_BS),
        ("mel_band_roformer_kj", SMALL_MEL),
        ("bs_roformer_musdb18", SMALL_BS_4STEM),
        ("mel_band_roformer_musdb18", SMALL_MEL_4STEM),
    ],
    ids=["bs", "mel", "bs_4stem", "mel_4stem"],
)
def test_job_chunks_equal_msst_demix_small(
    settings: Settings, music: np.ndarray, tmp_path: Path, name: str, config: dict
) -> None:
    """7 s of real music (chunks of 1 s: many of them, both track ends) through a job's path,
    on the published configs narrowed (dim 16, depth 1; the 4-stem ones keep their mask MLP
    widths, bands and inference settings). For the Mel-Band configs MSST's last batch is four
    chunks, whose dropped fade-outs reach real frames (0.17 x peak from MSST's own result with
    batches of one)."""
    track = np.ascontiguousarray(music[:, 3 * 44100 : 10 * 44100])
    model = install(settings, name, config, seed=3)
    separator = ModelRegistry(settings).get(name)
    ours = job_stems(separator, track, tmp_path)
    reference = reference_stems(model, track, config)
    assert relative_error(ours, reference) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("mel_band_roformer_musdb18", MEL_MUSDB18),
        ("bs_roformer_musdb18", BS_MUSDB18),
        ("bs_roformer_viperx", VIPERX_BS),
    ],
    ids=["mel_4stem", "bs_4stem", "viperx"],
)
def test_job_chunks_equal_msst_demix_full_size(
    settings: Settings, music: np.ndarray, tmp_path: Path, name: str, config: dict
) -> None:
    """The published configs' full-size networks (random weights) on 20 s of real music: the
    4-stem Mel-Band (58 M parameters) and BS-RoFormer (132 M) of MSST's MUSDB18 tables, and
    the 160 M-parameter viperx vocals model. Times on the 2-core CPU: README, RoFormer."""
    model = install(settings, name, config, seed=1)
    separator = ModelRegistry(settings).get(name)
    assert separator.info.stems == list(rs.Inference.of(config).stems)
    ours = job_stems(separator, music, tmp_path)
    reference = reference_stems(model, music, config)
    error = relative_error(ours, reference)
    print(f"\n{name}, full size: max |diff| / peak = {error:.2e}")
    assert error <= TOLERANCE


def test_mask_estimators_take_the_configs_width() -> None:
    """`mlp_expansion_factor` (the package's classes always build 4): each band's MLP has the
    package's own layers for the config, with hidden width dim * factor as MSST builds it."""

    def band_mlp(config: dict, stem: int = -1) -> list[torch.nn.Linear]:
        mlp = rs.build_model(config).mask_estimators[stem].to_freqs[0]
        return [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]

    for config, factor in [(SMALL_MEL_4STEM, 1), (SMALL_BS_4STEM, 2)]:
        assert len(rs.build_model(config).mask_estimators) == 4
        four = {**config, "model": {**config["model"], "mlp_expansion_factor": 4}}
        ours, package = band_mlp(config), band_mlp(four)
        assert len(ours) == len(package) >= 2
        assert ours[0].in_features == package[0].in_features == 16
        assert ours[-1].out_features == package[-1].out_features
        assert [m.out_features for m in ours[:-1]] == [16 * factor] * (len(ours) - 1)
        assert [m.out_features for m in package[:-1]] == [16 * 4] * (len(ours) - 1)


def test_mel_checkpoints_are_read_in_msst_names(settings: Settings, tmp_path: Path) -> None:
    """MSST's Mel-Band RoFormer names its time and freq transformers layers.<i>.0 and .1; the
    package's network, with a None slot first, .1 and .2. Either file loads; a file of
    another layout is refused."""
    torch.manual_seed(0)
    model = rs.build_model(SMALL_MEL_4STEM)
    msst = rn.msst_state_dict(model)
    assert "layers.0.0.layers.0.0.to_qkv.weight" in msst and not rn.counts_from_one(msst)
    package_names = {"layers.0.1.": "layers.0.0.", "layers.0.2.": "layers.0.1."}
    assert set(msst) == {
        package_names[k[:11]] + k[11:] if k[:11] in package_names else k for k in model.state_dict()
    }
    for state in (msst, model.state_dict()):
        path = tmp_path / "model.ckpt"
        torch.save(state, path)
        loaded = rs.build_model(SMALL_MEL_4STEM)
        rn.load_weights(loaded, path, "mine", tmp_path / "model.yaml")
        got = loaded.state_dict()  # once: a state dict per key made this test take 40 s
        for key, value in model.state_dict().items():
            assert torch.equal(got[key], value), key
    torch.save({k: v for k, v in msst.items() if not k.startswith("layers.0.1.")}, path)
    with pytest.raises(ModelUnavailable, match="Missing key"):
        rn.load_weights(rs.build_model(SMALL_MEL_4STEM), path, "mine", tmp_path / "model.yaml")


def test_stems_follow_the_config() -> None:
    assert rs.Inference.of(SMALL_BS).stems == ["vocals", "other"]
    assert rs.Inference.of(MUSDB18_BS).stems == ["vocals", "no_vocals"]
    untargeted = {**MUSDB18_BS, "training": {"instruments": ["vocals", "bass", "drums", "other"]}}
    assert rs.Inference.of(untargeted).stems == ["vocals", "bass", "drums", "other"]
    assert rs.Inference.of(VIPERX_BS).chunk == 352800


def test_a_registry_name_is_fetchable_where_its_mirror_answers(settings: Settings) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # answers 501
    Thread(target=server.serve_forever, daemon=True).start()
    root = f"http://127.0.0.1:{server.server_address[1]}/mirror"
    try:
        mirrored = settings.model_copy(update={"auto_fetch": True, "roformer_root_url": root})
        urls = rs.published_urls("bs_roformer_musdb18", mirrored)
        files = (
            "model_bs_roformer_ep_17_sdr_9.6568.ckpt",
            "config_bs_roformer_384_8_2_485100.yaml",
        )
        assert urls == {f: f"{root}/{f}" for f in files}
        info = rs.probe("bs_roformer_musdb18", mirrored)
        assert info.fetchable and not info.available, info
        assert info.stems == ["drums", "bass", "other", "vocals"]  # as published, before the config
        off = rs.probe("bs_roformer_musdb18", settings)  # the test session: AUTO_FETCH=false
        assert not off.fetchable and "AUTO_FETCH=false" in off.reason
    finally:
        server.shutdown()
        server.server_close()
