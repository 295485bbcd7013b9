"""The Demucs separator: weights are found offline where `get_model` looks, and chunks fused by
`common.chunks` equal `demucs.api.Separator(shifts=0).separate_tensor` on real music.

Models are real Demucs architectures with random weights, saved in the package format Demucs
downloads and written where the download would leave them (`TORCH_HOME/hub/checkpoints`, or a
Hugging Face cache). Only the download itself is cut off, so a wrong file name fails loudly
instead of reaching for the network.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from demucs.htdemucs import HTDemucs
from demucs.states import save_with_checksum

from common.config import Settings
from common.errors import BadRequest, InvalidOption, ModelUnavailable
from common.interfaces import ChunkSpec
from prediction import demucs_separator
from prediction.demucs_separator import DemucsSeparator
from prediction.devices import pick_device, run_in_batches
from prediction.registry import ModelRegistry
from test.separation_fixtures import (  # noqa: F401
    FOUR,
    FULL,
    MUSIC,
    SIX,
    SMALL,
    TESTDATA,
    TOLERANCE,
    demucs_reference,
    htdemucs,
    install_published,
    package,
    real_music,
    relative_error,
    separate_in_chunks,
    separate_in_passes,
)

# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A models dir of our own, the hub offline, and downloads that fail instead of running."""
    import huggingface_hub.constants as hf

    models = tmp_path / "models"
    monkeypatch.setenv("TORCH_HOME", str(models / "torch"))
    monkeypatch.setenv("HF_HOME", str(models / "huggingface"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    # huggingface_hub read these at import; demucs' own `get_model` (the reference) reads them.
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(models / "huggingface" / "hub"))

    def no_download(url: str, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    # Eager here: these tests are about loading and chunk exactness; test_compiled shows the
    # compiled core gives the eager result.
    return Settings(models_dir=models, device="cpu", torch_threads=1, compile_models="off")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    track = real_music()
    if track is None:
        pytest.skip(f"real test music not found under {TESTDATA}")
    return track


# --- probe ------------------------------------------------------------------------------------


def test_probe_names_the_missing_file_and_where_it_goes(settings: Settings) -> None:
    info = demucs_separator.probe("htdemucs", settings)
    assert not info.available
    checkpoints = Path(settings.models_dir) / "torch" / "hub" / "checkpoints"
    assert "955717e8-8726e21a.th" in info.reason
    assert str(checkpoints) in info.reason
    assert "./run.sh fetch-models htdemucs" in info.reason
    assert info.stems == FOUR and info.segment == 343980 and info.normalise


def test_probe_of_a_bag_lists_every_missing_file(settings: Settings) -> None:
    info = demucs_separator.probe("htdemucs_ft", settings)
    assert not info.available
    for sig in ("f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"):
        assert sig in info.reason
    mmi = demucs_separator.probe("hdemucs_mmi", settings)
    assert mmi.segment == 44 * 44100  # the bag's yaml sets 44 s


def test_registry_refuses_a_missing_model_with_the_probe_reason(settings: Settings) -> None:
    with pytest.raises(ModelUnavailable, match="955717e8-8726e21a.th"):
        ModelRegistry(settings).get("htdemucs")


def test_unknown_name_lists_the_valid_ones(settings: Settings) -> None:
    with pytest.raises(InvalidOption) as err:
        ModelRegistry(settings).info("htdemucs_9000")
    for name in ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx_extra", "umxhq"):
        assert name in err.value.message


def test_probe_finds_the_torch_hub_file(settings: Settings) -> None:
    install_published(settings, "htdemucs", [htdemucs(FOUR, 0, **SMALL)])
    info = demucs_separator.probe("htdemucs", settings)
    assert info.available, info.reason
    assert "955717e8-8726e21a.th" in info.reason


def test_probe_and_load_from_the_hugging_face_cache(settings: Settings) -> None:
    """The layout a hub download leaves: refs/main -> snapshots/<commit>/{yaml, safetensors}."""
    from safetensors.torch import save_file

    model = htdemucs(FOUR, 1, **SMALL)
    repo = Path(settings.models_dir) / "huggingface" / "hub" / "models--adefossez--HTDemucs"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "htdemucs.yaml").write_text("models: ['955717e8']\n")
    _, kwargs = model._init_args_kwargs
    kwargs = {**kwargs, "segment": {"_type": "fraction", "numerator": 39, "denominator": 5}}
    metadata = {"klass": "demucs.htdemucs.HTDemucs", "args": "[]", "kwargs": json.dumps(kwargs)}
    save_file(model.state_dict(), snapshot / "955717e8.safetensors", metadata=metadata)

    info = demucs_separator.probe("htdemucs", settings)
    assert info.available and "Hugging Face cache" in info.reason, info.reason
    separator = demucs_separator.load("htdemucs", settings)
    loaded = separator.models[0]
    assert torch.equal(
        loaded.state_dict()["freq_emb.embedding.weight"],
        model.state_dict()["freq_emb.embedding.weight"],
    )


def test_checkpoint_path_inside_the_models_dir_loads(settings: Settings) -> None:
    models = Path(settings.models_dir)
    models.mkdir(parents=True)
    save_with_checksum(package(htdemucs(SIX, 2, **SMALL)), models / "mine.th")
    path = str(next(models.glob("mine-*.th")))
    info = demucs_separator.probe(path, settings)
    assert info.available and info.stems == SIX and info.segment == 343980, info.reason
    separator = ModelRegistry(settings).get(path)
    assert separator.info.stems == SIX and separator.padded_length(1000) == 343980


def test_checkpoint_path_outside_the_models_dir_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere" / "model.th"
    outside.parent.mkdir()
    torch.save(package(htdemucs(FOUR, 3, **SMALL)), outside)
    info = demucs_separator.probe(str(outside), settings)
    assert not info.available and "outside the models dir" in info.reason


def test_a_file_that_is_no_demucs_package_is_explained(settings: Settings) -> None:
    models = Path(settings.models_dir)
    models.mkdir(parents=True)
    torch.save({"state_dict": {}}, models / "other.pt")
    info = demucs_separator.probe(str(models / "other.pt"), settings)
    assert not info.available and "klass" in info.reason and "state_dict" in info.reason
    (models / "noise.th").write_bytes(b"not a pickle at all")
    info = demucs_separator.probe(str(models / "noise.th"), settings)
    assert not info.available and "cannot read checkpoint" in info.reason


# --- exactness against demucs.api.Separator.separate_tensor -----------------------------------


def test_small_htdemucs_chunks_equal_separate_tensor(settings: Settings, music) -> None:
    install_published(settings, "htdemucs", [htdemucs(FOUR, 10, **SMALL)])
    separator = ModelRegistry(settings).get("htdemucs")
    assert separator.info.stems == FOUR and separator.info.segment == 343980
    assert (
        relative_error(separate_in_chunks(separator, music), demucs_reference(music, "htdemucs"))
        <= TOLERANCE
    )


def test_six_source_htdemucs_chunks_equal_separate_tensor(settings: Settings, music) -> None:
    install_published(settings, "htdemucs_6s", [htdemucs(SIX, 11, **SMALL)])
    separator = demucs_separator.load("htdemucs_6s", settings)
    assert separator.info.stems == SIX
    assert (
        relative_error(separate_in_chunks(separator, music), demucs_reference(music, "htdemucs_6s"))
        <= TOLERANCE
    )


BAG_WEIGHTS = [[1.0, 0.5, 0.25, 0.0], [0.5, 1.0, 0.75, 2.0]]


@pytest.fixture
def bag_repo(tmp_path: Path) -> Path:
    """A bag of two small HTDemucs, "mybag", with per-source weights in a local repo (`--repo`):
    the only way to give a bag weights of our choosing."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for sig, seed in (("aaaa0001", 20), ("bbbb0002", 21)):
        save_with_checksum(package(htdemucs(FOUR, seed, **SMALL)), repo / f"{sig}.th")
    bag = {"models": ["aaaa0001", "bbbb0002"], "weights": BAG_WEIGHTS}
    (repo / "mybag.yaml").write_text(yaml.safe_dump(bag))
    return repo


def test_bag_with_per_source_weights_equals_separate_tensor(
    settings: Settings, bag_repo: Path, music
) -> None:
    from demucs.pretrained import get_model

    separator = DemucsSeparator("mybag", get_model("mybag", repo=bag_repo))
    assert separator.weights == BAG_WEIGHTS and len(separator.models) == 2
    assert separator.member_weights() == BAG_WEIGHTS
    assert (
        relative_error(
            separate_in_chunks(separator, music), demucs_reference(music, "mybag", repo=bag_repo)
        )
        <= TOLERANCE
    )


# shifts=1 proves the property (each member its own offsets, as apply_model draws them) in the
# default run; shifts=2 (52 s here) is under -m slow
@pytest.mark.parametrize("shifts", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_bag_with_shifts_equals_separate_tensor_with_the_same_seed(
    settings: Settings, bag_repo: Path, tmp_path: Path, music, shifts: int
) -> None:
    """`quality=render` runs htdemucs_ft, a bag, with a shift: each member has shifts of its
    own, member after member, as `apply_model` draws them; Demucs given the offsets the plan
    drew (as many as it asks for) gives our result."""
    from demucs.pretrained import get_model

    separator = DemucsSeparator("mybag", get_model("mybag", repo=bag_repo))
    ours, offsets = separate_in_passes(separator, music, shifts, 3, tmp_path / "job")
    assert len(offsets) == 2 * shifts and len(set(offsets)) == len(offsets)
    reference = demucs_reference(music, "mybag", repo=bag_repo, shifts=shifts, offsets=offsets)
    assert relative_error(ours, reference) <= TOLERANCE
    # the offsets matter: other ones give another result
    moved = [(o + 4410) % 22051 for o in offsets]
    other = demucs_reference(music, "mybag", repo=bag_repo, shifts=shifts, offsets=moved)
    assert relative_error(other, reference) > 100 * TOLERANCE


def test_single_model_with_shifts_equals_separate_tensor_with_the_same_seed(
    settings: Settings, tmp_path: Path, music
) -> None:
    install_published(settings, "htdemucs", [htdemucs(FOUR, 4, **SMALL)])
    separator = demucs_separator.load("htdemucs", settings)
    assert separator.member_weights() == []
    ours, offsets = separate_in_passes(separator, music, 2, 0, tmp_path / "job")
    with demucs_separator.offline_hub(settings):
        reference = demucs_reference(music, "htdemucs", shifts=2, offsets=offsets)
    assert relative_error(ours, reference) <= TOLERANCE


def test_a_chunk_naming_a_member_the_model_lacks_is_refused(
    settings: Settings, bag_repo: Path
) -> None:
    from demucs.pretrained import get_model

    separator = DemucsSeparator("mybag", get_model("mybag", repo=bag_repo))
    window = separator.padded_length(separator.info.segment)
    chunk = ChunkSpec(
        index=0, offset=0, length=1000, window_start=0, window_length=window, member=2
    )
    with pytest.raises(BadRequest, match="2 member"):
        separator.separate_chunks(np.zeros((1, 2, window), np.float32), [chunk])
    mixed = [chunk.model_copy(update={"member": 0}), chunk.model_copy(update={"member": None})]
    with pytest.raises(BadRequest, match="for all its chunks or for none"):
        separator.separate_chunks(np.zeros((2, 2, window), np.float32), mixed)


def test_published_bag_loads_with_its_weights(settings: Settings) -> None:
    install_published(settings, "htdemucs_ft", [htdemucs(FOUR, s, **SMALL) for s in range(4)])
    separator = demucs_separator.load("htdemucs_ft", settings)
    assert len(separator.models) == 4
    assert separator.weights == [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]
    out = separator.separate(np.zeros((1, 2, 343980), np.float32))
    assert out.shape == (1, 4, 2, 343980)


@pytest.mark.slow
def test_full_size_htdemucs_chunks_equal_separate_tensor(settings: Settings, music) -> None:
    install_published(settings, "htdemucs", [htdemucs(FOUR, 12, **FULL)])
    separator = demucs_separator.load("htdemucs", settings)
    params = sum(p.numel() for p in separator.models[0].parameters())
    assert 40e6 < params < 44e6
    assert (
        relative_error(separate_in_chunks(separator, music), demucs_reference(music, "htdemucs"))
        <= TOLERANCE
    )


def test_window_of_the_wrong_length_is_refused(settings: Settings) -> None:
    from common.errors import BadRequest

    separator = DemucsSeparator("small", htdemucs(FOUR, 13, **SMALL))
    with pytest.raises(BadRequest, match="343980"):
        separator.separate(np.zeros((1, 2, 1000), np.float32))


def test_bag_of_different_segments_is_refused() -> None:
    from demucs.apply import BagOfModels

    a = htdemucs(FOUR, 14, **SMALL)
    b = HTDemucs(sources=FOUR, segment=Fraction(5), **SMALL)
    with pytest.raises(ModelUnavailable, match="different segments"):
        DemucsSeparator("mixed", BagOfModels([a, b]))


# --- devices (used by both torch separators) --------------------------------------------------


def test_unusable_device_falls_back_to_cpu_with_a_warning() -> None:
    assert pick_device("cpu") == ("cpu", [])
    if not torch.cuda.is_available():
        device, warnings = pick_device("cuda:7")
        assert device == "cpu" and "cuda:7" in warnings[0]
        assert pick_device("auto")[0] in ("cpu", "mps")


def test_out_of_memory_halves_the_batch_then_runs_on_cpu() -> None:
    """The accelerator fits 1 window once, then nothing: 4 -> 2 -> 1 -> the rest on cpu."""
    calls: list[tuple[int, str]] = []

    def forward(x: torch.Tensor, device: str) -> torch.Tensor:
        calls.append((x.shape[0], device))
        if device == "cuda" and (x.shape[0] > 1 or len(calls) > 3):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return x * 2  # computed on the CPU: only the device's name matters here

    x = torch.arange(8.0).reshape(4, 2)
    out, warnings = run_in_batches(forward, x, "cuda", batch_size=4)
    assert torch.equal(out, x * 2)
    assert calls == [(4, "cuda"), (2, "cuda"), (1, "cuda"), (1, "cuda")] + [(1, "cpu")] * 3
    assert len(warnings) == 3 and "ran on cpu" in warnings[-1]


def test_out_of_memory_on_the_cpu_is_raised() -> None:
    def forward(x: torch.Tensor, device: str) -> torch.Tensor:
        raise RuntimeError("DefaultCPUAllocator: out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_in_batches(forward, torch.zeros(2, 2), "cpu", batch_size=2)
