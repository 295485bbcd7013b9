"""Open-Unmix (umxhq, umxl, umx) as a `Separator`.

Weights are loaded by openunmix's own loaders (`openunmix.umxhq(...)` etc.), which fetch one
`<target>-<hash>.pth` per stem through `torch.hub`, cached in `TORCH_HOME/hub/checkpoints/`;
a model counts as present when all its files are there. Missing files are fetched by
`download` from the same zenodo URLs, with torch.hub's check of the SHA-256 prefix in each
file name (the loaders themselves do not check it).

Open-Unmix separates a whole track in its reference. Here every chunk carries real neighbouring
audio on each side, so its bidirectional LSTM sees past the chunk edges, and the chunks are
cross-faded by the common overlap-add. Its Wiener filter (one EM step) estimates the stereo
image over blocks of `WIENER_WIN_LEN` STFT frames counted from the start of its input, so chunk
sizes are whole blocks: with the default overlap every window then starts on the whole track's
block grid and the filter sees the very blocks a whole-track run sees. Measured on 23 s of real
music with umxhq's architecture (random weights): 46 dB from the whole-track result on every
stem, against 21 dB for 10 s chunks off the grid.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from common.config import Settings
from common.errors import ModelUnavailable
from common.interfaces import SeparatorInfo
from prediction.devices import TorchSeparator, configure_threads, pick_device
from prediction.download import Expected, download_failed, fetch_refusal
from prediction.weights import models_dir_env, torch_checkpoints_dir

# The library default (openunmix.umxhq(), its CLI and `predict.separate` all use 1): one EM
# step of the multichannel Wiener filter.
NITER = 1
N_HOP = 1024  # STFT hop of umxhq, umxl and umx, frames
# STFT frames per Wiener block (2.3 s). The library default is 300 (7 s), a memory bound; 100
# keeps chunks near 10 s while they stay whole blocks.
WIENER_WIN_LEN = 100
BLOCK = WIENER_WIN_LEN * N_HOP  # 102400 frames
SEGMENT = 4 * BLOCK  # 409600 frames (9.3 s) of centre per chunk; stride at overlap 0.25: 3 blocks
CONTEXT = BLOCK  # 102400 frames (2.3 s) of real audio on each side of a chunk
OVERLAP = 0.25

STEMS = ("vocals", "drums", "bass", "other")  # the loaders' target order
# The files openunmix 1.3.0's loaders fetch (the last part of their zenodo URLs), per stem.
HUB_FILES = {
    "umxhq": {
        "vocals": "vocals-b62c91ce.pth",
        "drums": "drums-9619578f.pth",
        "bass": "bass-8d85a5bd.pth",
        "other": "other-b52fbbf7.pth",
    },
    "umxl": {
        "vocals": "vocals-bccbd9aa.pth",
        "drums": "drums-69e0ebd4.pth",
        "bass": "bass-2ca1ce51.pth",
        "other": "other-c8c5b3e6.pth",
    },
    "umx": {
        "vocals": "vocals-c8df74a5.pth",
        "drums": "drums-5a48008b.pth",
        "bass": "bass-646024d3.pth",
        "other": "other-f8e132cc.pth",
    },
}
# The zenodo records openunmix 1.3.0's loaders fetch HUB_FILES from.
ZENODO = "https://zenodo.org"
RECORDS = {"umxhq": "3370489", "umxl": "5069601", "umx": "3370486"}


def zenodo(settings: Settings) -> str:
    """Where the files come from: zenodo, or the mirror UMX_ROOT_URL names (a test's hub)."""
    return settings.umx_root_url.rstrip("/") or ZENODO


def file_urls(name: str, settings: Settings) -> dict[str, str]:
    """file name -> the URL openunmix's loader fetches it from."""
    root = f"{zenodo(settings)}/records/{RECORDS[name]}/files"
    return {file: f"{root}/{file}" for file in HUB_FILES[name].values()}


def download_plan(name: str, settings: Settings) -> list[list[Expected]]:
    """The files `download` writes (torch.hub: `<file>.<hex>.partial`, then `<file>`)."""
    folder = torch_checkpoints_dir(settings)
    return [[Expected(folder, file, url) for file, url in file_urls(name, settings).items()]]


def probe(name: str, settings: Settings) -> SeparatorInfo:
    """Whether `name`'s four files are in the torch hub cache, without loading them."""
    if name not in HUB_FILES:
        raise ModelUnavailable(
            f"{name!r} is not an Open-Unmix model; Open-Unmix models: {', '.join(HUB_FILES)}"
        )
    checkpoints = torch_checkpoints_dir(settings)
    files = [checkpoints / f for f in HUB_FILES[name].values()]
    missing = [f.name for f in files if not f.is_file()]
    fetchable = False
    if not missing:
        reason = f"{name}: weights found in {checkpoints}"
    elif (refusal := fetch_refusal(settings, [zenodo(settings)])) is None:
        fetchable = True
        reason = (
            f"{name}: weights not here yet ({', '.join(missing)} in {checkpoints}/): downloaded "
            f"on first use from zenodo, or ahead of time by `./run.sh fetch-models {name}`."
        )
    else:
        reason = (
            f"{name}: weights not found. Expected {', '.join(missing)} in {checkpoints}/. "
            f"Run `./run.sh fetch-models {name}` where the network allows, "
            f"or copy the file(s) there. Not fetched: {refusal}."
        )
    info = model_info(name, list(STEMS), available=not missing, reason=reason)
    return info.model_copy(update={"fetchable": fetchable})


def download(name: str, settings: Settings) -> None:
    """Fetch `name`'s missing files with torch.hub, checking each one's SHA-256 prefix (a
    failed or corrupt download leaves nothing in the cache). Raises ModelUnavailable."""
    socket.setdefaulttimeout(settings.fetch_timeout_s)  # torch.hub's urlopen has none
    with torch_home(settings):
        for url in file_urls(name, settings).values():
            try:
                torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True)
            except Exception as e:
                raise download_failed(name, e, settings.fetch_timeout_s) from e


def model_info(name: str, stems: list[str], *, available: bool, reason: str) -> SeparatorInfo:
    return SeparatorInfo(
        name=name,
        family="openunmix",
        stems=stems,
        available=available,
        reason=reason,
        segment=SEGMENT,
        overlap=OVERLAP,
        normalise=False,
    )


def loader(name: str) -> Callable[..., torch.nn.Module]:
    import openunmix

    # The named functions, not `utils.load_separator(name)`: that one first tries `name` as a
    # path relative to the working directory.
    return {"umxhq": openunmix.umxhq, "umxl": openunmix.umxl, "umx": openunmix.umx}[name]


def load(name: str, settings: Settings) -> UmxSeparator:
    """Load `name` through openunmix's loader on the configured device."""
    info = probe(name, settings)
    if not info.available:
        raise ModelUnavailable(info.reason)
    device, warnings = pick_device(settings.device)
    configure_threads(settings.torch_threads)
    with torch_home(settings):
        try:
            model = loader(name)(
                niter=NITER,
                device=device,
                pretrained=True,
                wiener_win_len=WIENER_WIN_LEN,
                residual=False,
            )
        except Exception as e:
            # torch.hub raises anything from URLError to a size mismatch for a broken cache.
            raise ModelUnavailable(f"{name}: the weights are present but do not load: {e}") from e
    if model.stft.n_hop != N_HOP:
        raise ModelUnavailable(f"{name}: expected an STFT hop of {N_HOP}, found {model.stft.n_hop}")
    model.freeze()
    return UmxSeparator(
        name,
        model,
        device,
        batch_size=settings.predictor_batch_size or None,
        reason=info.reason,
        warnings=warnings,
    )


@contextmanager
def torch_home(settings: Settings) -> Iterator[None]:
    """TORCH_HOME where the probe looked, while the loader reads the hub cache."""
    saved = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = models_dir_env(settings)["TORCH_HOME"]
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = saved


class UmxSeparator(TorchSeparator):
    """(batch, 2, window) raw windows -> (batch, n_stems, 2, window) stems.

    The window is the chunk plus `CONTEXT` frames on each side (zeros beyond the track).
    """

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        device: str = "cpu",
        *,
        batch_size: int | None = None,
        reason: str = "",
        warnings: list[str] | None = None,
    ):
        self.model = model
        super().__init__([model], device, batch_size, warnings)
        stems = list(model.target_models.keys())
        self.info = model_info(name, stems, available=True, reason=reason or f"{name}: loaded")

    def padded_length(self, length: int) -> int:
        return length + 2 * CONTEXT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, 2, window) -> (batch, n_stems, 2, window): the library's whole pipeline
        (STFT, target models, Wiener filter, ISTFT)."""
        return self.model(x)
