"""The Open-Unmix separator: weights are found offline in the torch hub cache, loaded by
openunmix's own loader, and chunks with context, fused by `common.chunks`, stay close to
Open-Unmix's whole-track separation on real music.

The model is umxhq's architecture with random weights, written where `torch.hub` caches the
download; only the download itself is cut off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from common.chunks import center_trim, chunk_window, overlap_add, plan_chunks
from common.config import REPO_ROOT, Settings
from common.errors import InvalidOption, ModelUnavailable
from prediction import umx_separator
from prediction.registry import ModelRegistry
from prediction.separator import Separator
from prediction.umx_separator import CONTEXT, HUB_FILES, SEGMENT, STEMS

TESTDATA = REPO_ROOT.parent / "shared" / "testdata"
MUSIC = [
    TESTDATA / "stems" / "falcon69" / "mixture.flac",
    TESTDATA / "tricky" / "fmt_spleeter_44k_s16_stereo.wav",
]
MIN_SDR_DB = 25.0


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A models dir of our own and downloads that fail instead of running."""
    models = tmp_path / "models"
    monkeypatch.setenv("TORCH_HOME", str(models / "torch"))

    def no_download(url: str, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return Settings(models_dir=models, device="cpu", torch_threads=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    """(2, n) float32: ≥ 20 s of real music (two recordings, repeated)."""
    if not all(p.is_file() for p in MUSIC):
        pytest.skip(f"real test music not found under {TESTDATA}")
    parts = [sf.read(p, dtype="float32", always_2d=True)[0].T for p in MUSIC]
    track = np.concatenate(parts, axis=1)
    while track.shape[1] < 20 * 44100:
        track = np.concatenate([track, parts[0]], axis=1)
    return np.ascontiguousarray(track)


def install_umxhq(settings: Settings, seed: int = 0) -> None:
    """umxhq's four target models (its exact architecture), random weights, hub-cached."""
    from openunmix.model import OpenUnmix
    from openunmix.utils import bandwidth_to_max_bin

    checkpoints = Path(settings.models_dir) / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    max_bin = bandwidth_to_max_bin(rate=44100.0, n_fft=4096, bandwidth=16000)
    for k, file in enumerate(HUB_FILES["umxhq"].values()):
        torch.manual_seed(seed + k)
        model = OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, max_bin=max_bin)
        torch.save(model.state_dict(), checkpoints / file)


def separate_in_chunks(separator: Separator, track: np.ndarray) -> np.ndarray:
    """(2, n) -> (n_stems, 2, n) through `common.chunks` (no standardisation for Open-Unmix)."""
    info = separator.info
    assert not info.normalise
    plan = plan_chunks(track.shape[1], info.segment, info.overlap, separator.padded_length)
    pieces = []
    for chunk in plan.chunks:
        out = separator.separate(chunk_window(track, chunk)[None])[0]
        pieces.append((chunk, center_trim(out, chunk.length)))
    return overlap_add(pieces, plan, (len(info.stems), 2))


def whole_track(separator: umx_separator.UmxSeparator, track: np.ndarray) -> np.ndarray:
    """(n_stems, 2, n): Open-Unmix's own functional front end on the whole track."""
    from openunmix.predict import separate

    with torch.no_grad():
        stems = separate(torch.from_numpy(track), rate=44100, separator=separator.model)
    return np.stack([stems[s][0].numpy() for s in separator.info.stems])


def sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = np.sum((reference - estimate).astype(np.float64) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))


def test_probe_names_the_missing_files_and_where_they_go(settings: Settings) -> None:
    info = umx_separator.probe("umxhq", settings)
    assert not info.available
    checkpoints = Path(settings.models_dir) / "torch" / "hub" / "checkpoints"
    assert str(checkpoints) in info.reason and "./run.sh fetch-models umxhq" in info.reason
    for file in HUB_FILES["umxhq"].values():
        assert file in info.reason
    with pytest.raises(ModelUnavailable, match="vocals-b62c91ce.pth"):
        ModelRegistry(settings).get("umxhq")


def test_unknown_name_lists_the_valid_ones(settings: Settings) -> None:
    with pytest.raises(InvalidOption) as err:
        ModelRegistry(settings).info("umxxl")
    for name in ("umxhq", "umxl", "umx", "htdemucs"):
        assert name in err.value.message


def test_probe_finds_the_hub_cached_files(settings: Settings) -> None:
    install_umxhq(settings)
    info = umx_separator.probe("umxhq", settings)
    assert info.available, info.reason
    assert not umx_separator.probe("umxl", settings).available


def test_loads_through_the_registry(settings: Settings) -> None:
    install_umxhq(settings)
    separator = ModelRegistry(settings).get("umxhq")
    assert separator.info.stems == list(STEMS)
    assert separator.info.segment == SEGMENT and not separator.info.normalise
    assert separator.padded_length(1000) == 1000 + 2 * CONTEXT
    assert separator.model.niter == umx_separator.NITER == 1
    out = separator.separate(np.zeros((1, 2, 50000), np.float32))
    assert out.shape == (1, 4, 2, 50000)


def test_chunks_with_context_stay_close_to_the_whole_track(settings: Settings, music) -> None:
    install_umxhq(settings, seed=7)
    separator = umx_separator.load("umxhq", settings)
    reference = whole_track(separator, music)
    chunked = separate_in_chunks(separator, music)
    sdrs = {s: sdr_db(reference[k], chunked[k]) for k, s in enumerate(separator.info.stems)}
    assert min(sdrs.values()) >= MIN_SDR_DB, sdrs
