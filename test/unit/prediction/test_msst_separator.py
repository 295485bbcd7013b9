"""The MSST family (MDX23C, SCNet): registry names probed and fetched into
`<models>/<architecture>/`, networks built by the `msst` wheel's own classes from the published
configs (test/resources/msst/), and the job's chunks (plan, windows, `separate_chunks`, the
fuser) equal to MSST's own `msst.utils.model_utils.demix` on real music.

Models are the configs' networks at random weights, written where a download would land.
"""

from __future__ import annotations

import hashlib
import shutil
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import numpy as np
import pytest
import torch
import yaml
from ml_collections import ConfigDict
from msst.utils.model_utils import demix

from common.config import Settings
from common.errors import ModelUnavailable
from prediction import msst_separator as ms
from prediction.registry import ModelRegistry
from prediction.roformer_networks import read_config
from test.separation_fixtures import TOLERANCE, real_music, relative_error
from test.unit.prediction.test_roformer_separator import TupleDumper, job_stems

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:A window was not provided:UserWarning"),  # SCNet's STFT
]

PUBLISHED = Path(__file__).resolve().parents[2] / "resources" / "msst"
DRUMSEP = read_config(PUBLISHED / ms.CHECKPOINTS["mdx23c_drumsep"].files[1])
SCNET_XL = read_config(PUBLISHED / ms.CHECKPOINTS["scnet_xl_ihf"].files[1])
# The same networks, narrow and on short chunks: the default suite's size. MDX23C's STFT frames
# (chunk / hop + 1) must halve num_scales times: 64 frames of 512.
SMALL_DRUMSEP = {
    **DRUMSEP,
    "audio": {**DRUMSEP["audio"], "chunk_size": 63 * 512, "dim_t": 64},
    "model": {**DRUMSEP["model"], "num_channels": 8, "growth": 8, "num_blocks_per_scale": 1},
}
# SCNet's dual-path layers alternate an rfft and its inverse over time: an even number of them.
SMALL_SCNET = {
    **SCNET_XL,
    "audio": {**SCNET_XL["audio"], "chunk_size": 44100},
    "model": {**SCNET_XL["model"], "dims": [4, 8, 8, 16], "num_dplayer": 2},
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(models_dir=tmp_path / "models", device="cpu", torch_threads=1)


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    track = real_music(20.0)
    if track is None:
        pytest.skip("real test music (../shared/testdata) not found")
    return np.ascontiguousarray(track[:, : 20 * 44100])


def install(settings: Settings, name: str, config: dict, seed: int = 0) -> torch.nn.Module:
    """A random-weight network of `config`, saved (and its config) where `name`'s files go;
    the published configs as published, byte for byte."""
    checkpoint, config_path = ms.files_of(name, settings)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = ms.build_network(config, ms.CHECKPOINTS[name].architecture).eval()
    torch.save(model.state_dict(), checkpoint)
    if config in (DRUMSEP, SCNET_XL):
        shutil.copyfile(PUBLISHED / config_path.name, config_path)
    else:
        config_path.write_text(yaml.dump(config, Dumper=TupleDumper))
    return model


def msst_stems(model: torch.nn.Module, track: np.ndarray, config: dict, name: str) -> np.ndarray:
    """(n_stems, 2, n): MSST's own `demix` (generic mode), its stems in the config's order."""
    architecture = ms.CHECKPOINTS[name].architecture
    by_name = demix(ConfigDict(config), model, track, "cpu", architecture)
    return np.stack([by_name[s] for s in config["training"]["instruments"]])


class Remembered(torch.nn.Module):
    """`model`, its output for an input already seen (byte for byte, one batch item) taken from
    `seen`: two equal networks over one `seen` compute each distinct chunk once."""

    def __init__(self, model: torch.nn.Module, seen: dict[bytes, torch.Tensor]):
        super().__init__()
        self.model, self.seen = model, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keys = [hashlib.sha256(item.numpy().tobytes()).digest() for item in x]
        if any(k not in self.seen for k in keys):
            self.seen.update(zip(keys, self.model(x), strict=True))
        return torch.stack([self.seen[k] for k in keys])


def test_probe_says_what_to_download_and_where(settings: Settings) -> None:
    registry = ModelRegistry(settings)
    for name, family in [("mdx23c_drumsep", "mdx23c"), ("scnet_xl_ihf", "scnet")]:
        info = registry.info(name)
        entry = ms.CHECKPOINTS[name]
        assert not info.available and info.family == family
        assert str(Path(settings.models_dir) / family) in info.reason
        assert entry.files[0] in info.reason and entry.config_url in info.reason
        assert info.stems == list(entry.stems)
    assert registry.info("mdx23c_drumsep").stems == ["kick", "snare", "toms", "hh", "ride", "crash"]
    with pytest.raises(ModelUnavailable, match="not found"):
        registry.get("scnet_xl_ihf")


def test_stems_and_chunks_follow_the_published_configs(settings: Settings) -> None:
    for name, config in [("mdx23c_drumsep", DRUMSEP), ("scnet_xl_ihf", SCNET_XL)]:
        checkpoint, config_path = ms.files_of(name, settings)
        config_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PUBLISHED / config_path.name, config_path)
        checkpoint.touch()  # probe reads the config only
        info = ms.probe(name, settings)
        assert info.available and info.stems == list(ms.CHECKPOINTS[name].stems)
        assert info.segment == 4 * config["audio"]["chunk_size"]


def test_a_checkpoint_of_another_network_is_refused(settings: Settings) -> None:
    install(settings, "mdx23c_drumsep", SMALL_DRUMSEP)
    checkpoint, _ = ms.files_of("mdx23c_drumsep", settings)
    scnet = ms.build_network(SMALL_SCNET, "scnet")
    torch.save(scnet.state_dict(), checkpoint)
    with pytest.raises(ModelUnavailable, match="does not load") as err:
        ModelRegistry(settings).get("mdx23c_drumsep")
    assert str(checkpoint) in err.value.message
    wider = {**SMALL_DRUMSEP, "model": {**SMALL_DRUMSEP["model"], "num_channels": 16}}
    install(settings, "mdx23c_drumsep", SMALL_DRUMSEP)
    ms.files_of("mdx23c_drumsep", settings)[1].write_text(yaml.dump(wider, Dumper=TupleDumper))
    with pytest.raises(ModelUnavailable, match="does not load"):
        ModelRegistry(settings).get("mdx23c_drumsep")


def test_a_config_msst_cannot_build_is_refused() -> None:
    variant = {**SMALL_SCNET, "model": {**SMALL_SCNET["model"], "heads": 4}}
    with pytest.raises(ModelUnavailable, match="scnet cannot be built"):
        ms.build_network(variant, "scnet")


@pytest.mark.parametrize(
    ("name", "config"),
    [("mdx23c_drumsep", SMALL_DRUMSEP), ("scnet_xl_ihf", SMALL_SCNET)],
    ids=["mdx23c", "scnet"],
)
def test_job_chunks_equal_msst_demix_small(
    settings: Settings, music: np.ndarray, tmp_path: Path, name: str, config: dict
) -> None:
    """7 s of real music (chunks of 0.7 and 1 s: many of them, both track ends) through a job's
    path, on the published configs narrowed (their STFTs, bands, stems and inference settings
    kept; SCNet's batches of four included)."""
    track = np.ascontiguousarray(music[:, 3 * 44100 : 10 * 44100])
    model = install(settings, name, config, seed=3)
    separator = ModelRegistry(settings).get(name)
    assert isinstance(separator, ms.MsstSeparator)
    ours = job_stems(separator, track, tmp_path)
    reference = msst_stems(model, track, config, name)
    assert relative_error(ours, reference) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.timeout(6 * 3600)
@pytest.mark.parametrize(
    ("name", "config"),
    [("mdx23c_drumsep", DRUMSEP), ("scnet_xl_ihf", SCNET_XL)],
    ids=["mdx23c_drumsep", "scnet_xl_ihf"],
)
def test_job_chunks_equal_msst_demix_full_size(
    settings: Settings, music: np.ndarray, tmp_path: Path, name: str, config: dict
) -> None:
    """The published configs' full-size networks (random weights: MDX23C DrumSep 109 M
    parameters on 3 s chunks, SCNet XL IHF 53 M on 11 s) on 20 s of real music. Each distinct
    chunk input runs once (`Remembered`): the reference's batches and the job's single windows
    are the same network's outputs for byte-equal inputs, so this checks what the job builds and
    fuses; the small test above runs both in full. MDX23C: 34 chunks, 16 minutes on the
    contended 2-core machine; SCNet: 14 chunks of 11 s, 461 s on both cores of a quiet one
    (2.1e-7). Every core runs them (TORCH_THREADS=0), the reference's too."""
    settings = settings.model_copy(update={"torch_threads": 0})
    model = install(settings, name, config, seed=1)
    separator = ModelRegistry(settings).get(name)
    assert separator.info.stems == list(ms.CHECKPOINTS[name].stems)
    seen: dict[bytes, torch.Tensor] = {}
    reference = msst_stems(Remembered(model, seen), music, config, name)
    separator.model = Remembered(separator.model, seen)
    ours = job_stems(separator, music, tmp_path)
    error = relative_error(ours, reference)
    print(f"\n{name}, full size: max |diff| / peak = {error:.2e} ({len(seen)} distinct chunks)")
    assert error <= TOLERANCE


def test_a_registry_name_is_fetched_from_its_mirror(settings: Settings, tmp_path: Path) -> None:
    """A loopback HTTP server stands in for the mirror ROFORMER_ROOT_URL names: the config, then
    the checkpoint (loaded strictly before it is renamed into place), then a loadable model."""
    hub = tmp_path / "hub"
    hub.mkdir()
    published = Settings(models_dir=hub, device="cpu")
    install(published, "scnet_xl_ihf", SMALL_SCNET)
    for path in ms.files_of("scnet_xl_ihf", published):
        path.rename(hub / path.name)

    class Files(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(hub), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    Thread(target=server.serve_forever, daemon=True).start()
    root = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        mirrored = settings.model_copy(update={"auto_fetch": True, "roformer_root_url": root})
        files = ms.CHECKPOINTS["scnet_xl_ihf"].files
        assert ms.published_urls("scnet_xl_ihf", mirrored) == {f: f"{root}/{f}" for f in files}
        info = ms.probe("scnet_xl_ihf", mirrored)
        assert info.fetchable and not info.available, info
        ms.download("scnet_xl_ihf", mirrored)
        assert [p.name for p in ms.files_of("scnet_xl_ihf", mirrored)] == list(files)
        plan = ms.download_plan("scnet_xl_ihf", mirrored)[0]
        assert {e.folder for e in plan} == {ms.model_dir("scnet_xl_ihf", mirrored)}
        separator = ms.load("scnet_xl_ihf", mirrored)
        assert separator.info.family == "scnet" and separator.info.available
        off = ms.probe("mdx23c_drumsep", settings)  # the test session: AUTO_FETCH=false
        assert not off.fetchable and "AUTO_FETCH=false" in off.reason
    finally:
        server.shutdown()
        server.server_close()
