"""The RoFormer registry entries for lead/backing vocals, de-reverb, de-noise and six stems,
on their published configs (copies in test/resources/roformer/, sources in its README).

Each config's network, as the package builds it, is MSST's own class's (the `msst` wheel) for
the same `model` section, parameter for parameter; a checkpoint of random weights saved by
MSST's class where a download would land loads into it, and the separator names its outputs
ours (`Checkpoint.rename`). The networks are full size (228 M parameters for the three
Mel-Band configs, which share one network; 175 M for SW), each built once for the module.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
import torch
import yaml

from common.config import Settings
from prediction import roformer_networks as rn
from prediction import roformer_separator as rs
from prediction.registry import ModelRegistry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RESOURCES = Path(__file__).resolve().parents[2] / "resources" / "roformer"
ENTRIES = {  # registry name -> (its published config, the separator's stems)
    "mel_band_roformer_karaoke": (
        "model_mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956.ckpt.yaml",
        ["lead", "backing"],
    ),
    "mel_band_roformer_dereverb": ("dereverb_mel_band_roformer_anvuew.yaml", ["dry", "reverb"]),
    "mel_band_roformer_denoise": ("model_mel_band_roformer_denoise.yaml", ["clean", "noise"]),
    "bs_roformer_sw": (
        "config_BandSplit-Roformer_SW_by-jarredou.yaml",
        ["bass", "drums", "other", "vocals", "guitar", "piano"],
    ),
}


def published_config(name: str) -> dict:
    return rn.read_config(RESOURCES / ENTRIES[name][0])


class Networks:
    """Per distinct `model` section: the package's network, MSST's, and MSST's random weights
    saved as a checkpoint (MSST's names, as a published checkpoint holds them)."""

    def __init__(self, root: Path):
        self.root = root
        self.built: dict[str, tuple[torch.nn.Module, torch.nn.Module, Path]] = {}

    def of(self, name: str) -> tuple[torch.nn.Module, torch.nn.Module, Path]:
        from msst.models.bs_roformer import BSRoformer, MelBandRoformer

        config, architecture = published_config(name), rs.CHECKPOINTS[name].architecture
        key = f"{architecture}\n{yaml.safe_dump(config['model'], sort_keys=True)}"
        if key not in self.built:
            msst_class = MelBandRoformer if architecture == "mel_band_roformer" else BSRoformer
            torch.manual_seed(0)
            msst = msst_class(**config["model"]).eval()
            ours = rn.build_model(config, architecture).eval()
            checkpoint = self.root / f"msst_{len(self.built)}.ckpt"
            torch.save(msst.state_dict(), checkpoint)
            self.built[key] = (ours, msst, checkpoint)
        return self.built[key]


@pytest.fixture(scope="module")
def networks(tmp_path_factory) -> Networks:
    return Networks(tmp_path_factory.mktemp("msst_checkpoints"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(models_dir=tmp_path / "models", device="cpu", torch_threads=1)


def shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def test_the_entries_are_registered_with_their_published_files() -> None:
    for name, (_, stems) in ENTRIES.items():
        entry = rs.CHECKPOINTS[name]
        assert entry.our_stems == stems, name
        assert set(entry.rename) <= set(entry.stems), name
        assert rn.architecture_of(published_config(name)) == entry.architecture, name
        assert rs.Inference.of(published_config(name), entry.rename).stems == stems, name


@pytest.mark.parametrize("name", list(ENTRIES))
def test_the_network_is_msst_s(networks: Networks, name: str) -> None:
    """Parameter and buffer names and shapes of the package's network (in MSST's names)
    equal those of MSST's class for the same config; buffers (bands, rotary tables) equal."""
    ours, msst, _ = networks.of(name)
    theirs = msst.state_dict()
    assert shapes(rn.msst_state_dict(ours)) == shapes(theirs)
    parameters = {key for key, _ in msst.named_parameters()}
    for key, value in rn.msst_state_dict(ours).items():
        if key not in parameters:
            assert torch.equal(value, theirs[key]), key


@pytest.mark.parametrize("name", list(ENTRIES))
def test_msst_s_checkpoint_loads_and_the_stems_are_ours(
    networks: Networks, settings: Settings, name: str
) -> None:
    """Before the files are here the registry tells the renamed stems; with MSST's weights
    where a download lands, the separator loads them, each tensor in its place."""
    _, msst, saved = networks.of(name)
    stems = ENTRIES[name][1]
    assert ModelRegistry(settings).info(name).stems == stems
    checkpoint, config = rs.files_of(name, settings)
    checkpoint.parent.mkdir(parents=True)
    os.link(saved, checkpoint)  # the same bytes, once on disk
    shutil.copyfile(RESOURCES / ENTRIES[name][0], config)
    separator = ModelRegistry(settings).get(name)
    assert separator.info.stems == stems
    loaded, theirs = rn.msst_state_dict(separator.model), msst.state_dict()
    assert all(torch.equal(loaded[key], theirs[key]) for key in theirs)


def test_the_karaoke_model_is_fetched_from_a_loopback_mirror(
    networks: Networks, settings: Settings, tmp_path: Path
) -> None:
    """Both files from ROFORMER_ROOT_URL (as a mirror serves them, under their published
    names): the config is read, the checkpoint loads, and only then are they in place."""
    name = "mel_band_roformer_karaoke"
    _, _, saved = networks.of(name)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    checkpoint_file, config_file = rs.CHECKPOINTS[name].files
    os.link(saved, mirror / checkpoint_file)
    shutil.copyfile(RESOURCES / ENTRIES[name][0], mirror / config_file)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(mirror)))
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        root = f"http://127.0.0.1:{server.server_address[1]}"
        mirrored = settings.model_copy(update={"roformer_root_url": root})
        rs.download(name, mirrored)
    finally:
        server.shutdown()
        server.server_close()
    checkpoint, config = rs.files_of(name, settings)
    assert filecmp.cmp(checkpoint, saved, shallow=False)
    assert config.read_text() == (RESOURCES / ENTRIES[name][0]).read_text()
    info = rs.probe_files(name, settings)
    assert info.available and info.stems == ["lead", "backing"]
