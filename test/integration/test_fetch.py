"""First use fetches: weights missing here are downloaded through the library's own download.

A loopback HTTP server stands in for the hubs through the settings that point the libraries at
them: HF_ENDPOINT for huggingface_hub (Demucs' first choice), DEMUCS_ROOT_URL and
DEMUCS_REMOTE_ROOT for Demucs' legacy torch.hub repo, UMX_ROOT_URL for Open-Unmix's zenodo
files, ROFORMER_ROOT_URL for the RoFormer registry's URLs. It serves small random-weight
networks of the real architectures: htdemucs through the legacy repo, htdemucs_ft (a bag of
four) as a Hugging Face repository, bs_roformer_viperx's checkpoint + YAML slowly (so the job
shows its download's progress); and broken files: a corrupt htdemucs_6s (bytes that do not
match the SHA-256 prefix in the name), umxhq files of random bytes (torch.hub's hash check),
a mel_band_roformer_kj checkpoint that does not load, an hdemucs_mmi that never answers. It
counts requests. Nothing here reaches the real network.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import threading
import time
from collections import Counter
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import save as save_safetensors

from common.config import Settings
from common.ports import free_port
from prediction import roformer_networks as rn
from prediction import roformer_separator as rs
from prediction.umx_separator import HUB_FILES, RECORDS
from test.separation_fixtures import FOUR, SMALL, htdemucs, package
from test.stackutil import start_stack, wait_job
from test.unit.prediction.test_roformer_separator import SMALL_BS, SMALL_MEL

GOOD, CORRUPT, HANGS = "955717e8", "5c90dfd2", "75fc33f5"  # htdemucs, htdemucs_6s, hdemucs_mmi
FETCH_TIMEOUT_S = 3
HF_REPO = "adefossez/HTDemucs-ft"  # htdemucs_ft on the Hugging Face hub
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SLOW_PIECES, SLOW_PAUSE_S = 20, 0.2  # a slow file arrives in 20 pieces over ~4 s


class FakeHub:
    """Serves `files` (URL path -> bytes), the ones in `slow` piece by piece, never answers
    those in `hanging`; answers HEAD as the Hugging Face hub does (ETag, X-Repo-Commit,
    Content-Length); everything else is 404."""

    def __init__(
        self,
        port: int,
        files: dict[str, bytes],
        hanging: set[str],
        slow: set[str],
        pause_s: float = SLOW_PAUSE_S,
    ):
        self.port, self.files, self.hanging, self.slow = port, files, hanging, slow
        self.pause_s = pause_s  # between the pieces of a slow file
        self.requests: Counter[str] = Counter()
        self.server: ThreadingHTTPServer | None = None
        self.release = threading.Event()

    def start(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def headers_of(self, body: bytes | None) -> None:
                self.send_response(200 if body is not None else 404)
                if body is not None:
                    self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
                    self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()

            def do_HEAD(self) -> None:
                hub.requests[f"HEAD {self.path}"] += 1
                self.headers_of(b"" if self.path == "/" else hub.files.get(self.path))

            def do_GET(self) -> None:
                hub.requests[f"GET {self.path}"] += 1
                if self.path in hub.hanging:
                    hub.release.wait(60)  # until the test ends: the client must time out
                    return
                body = hub.files.get(self.path)
                self.headers_of(body)
                if body is None:
                    return
                if self.path not in hub.slow:
                    self.wfile.write(body)
                    return
                piece = -(-len(body) // SLOW_PIECES)
                for k in range(0, len(body), piece):
                    self.wfile.write(body[k : k + piece])
                    self.wfile.flush()
                    time.sleep(hub.pause_s)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def downloads(self, prefix: str) -> int:
        return sum(n for key, n in self.requests.items() if key.startswith(f"GET {prefix}"))


def th_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(package(model), buf)
    return buf.getvalue()


def safetensors_bytes(model: torch.nn.Module) -> bytes:
    """A model as Demucs' Hugging Face repositories hold it: its state, with the class and
    init arguments as JSON metadata (fractions as demucs.hf decodes them)."""

    def encode(value):
        if isinstance(value, Fraction):
            return {
                "_type": "fraction",
                "numerator": value.numerator,
                "denominator": value.denominator,
            }
        return value

    args, kwargs = model._init_args_kwargs
    metadata = {
        "klass": f"{type(model).__module__}.{type(model).__name__}",
        "args": json.dumps(args, default=encode),
        "kwargs": json.dumps({k: encode(v) for k, v in kwargs.items()}),
    }
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return save_safetensors(state, metadata=metadata)


def roformer_files(config: dict, architecture: str, seed: int) -> tuple[bytes, bytes]:
    """(checkpoint, YAML) of a random-weight network of `config`, as MSST ships them."""
    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(rn.msst_state_dict(rs.build_model(config, architecture)), buf)  # MSST's names
    return buf.getvalue(), yaml.dump(config).encode()


def hf_files(remote_root: Path) -> dict[str, bytes]:
    """htdemucs_ft's Hugging Face repository: its bag yaml and a safetensors per member."""
    bag = (remote_root / "htdemucs_ft.yaml").read_bytes()
    base = f"/{HF_REPO}/resolve/main"
    files = {f"{base}/htdemucs_ft.yaml": bag}
    for k, sig in enumerate(yaml.safe_load(bag)["models"]):
        files[f"{base}/{sig}.safetensors"] = safetensors_bytes(htdemucs(FOUR, 10 + k, **SMALL))
    return files


def demucs_remote(root: Path, names: dict[str, str]) -> Path:
    """A copy of Demucs' remote folder (its bag YAMLs and files.txt) in `root`, where each
    signature in `names` is the file named there, under `t/` of the legacy root URL."""
    import demucs.pretrained

    for bag in Path(demucs.pretrained.REMOTE_ROOT).glob("*.yaml"):
        shutil.copy(bag, root)
    lines = [
        line
        for line in (Path(demucs.pretrained.REMOTE_ROOT) / "files.txt").read_text().splitlines()
        if line.split("-", 1)[0] not in names
    ]
    (root / "files.txt").write_text("\n".join([*lines, "root: t/", *names.values()]) + "\n")
    return root


def legacy_name(sig: str, body: bytes) -> str:
    """A legacy Demucs file's name: its signature and its SHA-256's first 8 hex digits."""
    return f"{sig}-{hashlib.sha256(body).hexdigest()[:8]}.th"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The fake hub (not started: the first test runs offline) and its remote root folder."""

    good = th_bytes(htdemucs(FOUR, seed=0, **SMALL))
    corrupt_claims = hashlib.sha256(good).hexdigest()[:8]  # the name claims good's hash
    names = {
        GOOD: legacy_name(GOOD, good),
        CORRUPT: f"{CORRUPT}-{corrupt_claims}.th",
        HANGS: f"{HANGS}-0badf00d.th",
    }
    root = demucs_remote(tmp_path_factory.mktemp("remote"), names)
    files = {
        f"/demucs/t/{names[GOOD]}": good,
        f"/demucs/t/{names[CORRUPT]}": good[:-1000] + b"x" * 1000,
        **hf_files(root),
    }
    rng = np.random.default_rng(0)
    for file in HUB_FILES["umxhq"].values():  # not what the SHA-256 prefix in the name says
        files[f"/zenodo/records/{RECORDS['umxhq']}/files/{file}"] = rng.bytes(50_000)
    viperx = rs.CHECKPOINTS["bs_roformer_viperx"]
    ckpt, config = roformer_files(SMALL_BS, viperx.architecture, seed=0)
    files |= {f"/roformer/{viperx.files[0]}": ckpt, f"/roformer/{viperx.files[1]}": config}
    kj = rs.CHECKPOINTS["mel_band_roformer_kj"]
    _, config = roformer_files(SMALL_MEL, kj.architecture, seed=1)
    files |= {f"/roformer/{kj.files[0]}": rng.bytes(200_000), f"/roformer/{kj.files[1]}": config}
    slow = {f"/roformer/{viperx.files[0]}"}
    fake = FakeHub(free_port(), files, hanging={f"/demucs/t/{names[HANGS]}"}, slow=slow)
    fake.names, fake.remote_root = names, root
    fake.viperx_bytes = len(ckpt) + len(files[f"/roformer/{viperx.files[1]}"])
    yield fake
    fake.stop()


def online_settings(hub: FakeHub) -> dict[str, str]:
    """A stack's settings that fetch on first use from `hub` alone."""
    return {
        "auto_fetch": "true",  # the test session's default is off (test/conftest.py)
        "hf_hub_offline": "0",
        "hf_endpoint": f"http://127.0.0.1:{hub.port}",
        "demucs_root_url": f"http://127.0.0.1:{hub.port}/demucs/",
        "demucs_remote_root": str(hub.remote_root),
        "umx_root_url": f"http://127.0.0.1:{hub.port}/zenodo",
        "roformer_root_url": f"http://127.0.0.1:{hub.port}/roformer",
        "network_check_ttl_s": "1",
        "model_info_ttl_s": "1",  # the gateway sees the hub come up within a second or two
    }


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fetch_models")


@pytest.fixture(scope="module")
def client(hub, models_dir, tmp_path_factory):
    stack = start_stack(
        tmp_path_factory.mktemp("fetch_data"),
        models_dir,
        **online_settings(hub),
        fetch_timeout_s=FETCH_TIMEOUT_S,
        compile_models="off",
    )
    with httpx.Client(base_url=stack.url("gateway"), timeout=120) as c:
        yield c
    stack.stop()


@pytest.fixture(scope="module")
def upload() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    noise = (0.1 * rng.standard_normal((4 * 44100, 2))).astype("float32")
    sf.write(buf, noise, 44100, subtype="FLOAT", format="WAV")
    return buf.getvalue()


@pytest.fixture
def online(hub, client):
    """The hubs up, whichever test runs first (the offline test starts them when it runs)."""
    if hub.server is None:
        hub.start()
        wait_fetchable(client)
    return hub


def wait_fetchable(client: httpx.Client, timeout: float = 30.0) -> None:
    """Until the gateway's model list says htdemucs can be fetched (the predictor's network
    check and the gateway's list are each trusted for a second here)."""
    deadline = time.monotonic() + timeout
    while True:
        models = client.get("/api/models").json()["models"]
        if next(m for m in models if m["name"] == "htdemucs")["fetchable"]:
            return
        assert time.monotonic() < deadline, "the hub came up but htdemucs is not fetchable"
        time.sleep(0.2)


def submit(client: httpx.Client, upload: bytes, **fields) -> dict:
    r = client.post("/api/jobs", files={"file": ("song.wav", upload)}, data=fields)
    assert r.status_code == 202, r.text
    return r.json()


def test_offline_auto_falls_back_to_dsp_at_once(client, upload, hub):
    start = time.perf_counter()
    job = submit(client, upload)
    assert time.perf_counter() - start < 10  # no ~25 s of hub retries
    assert job["model"] == "dsp"
    assert "no network" in job["model_reason"], job["model_reason"]
    assert wait_job(client, job["id"], timeout=120)["status"] == "done"
    hub.start()  # the hubs come up: the next tests fetch
    wait_fetchable(client)


def test_first_job_fetches_once_and_later_jobs_find_the_file(
    client, upload, online, hub, models_dir
):
    jobs = [submit(client, upload, model="htdemucs") for _ in range(2)]
    stages = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states = [client.get(f"/api/jobs/{j['id']}").json() for j in jobs]
        stages |= {s["stage"] for s in states}
        if all(s["status"] in ("done", "failed") for s in states):
            break
        time.sleep(0.1)
    assert [s["status"] for s in states] == ["done", "done"], states
    assert all(s["model"] == "htdemucs" for s in states)
    assert any(s.startswith("downloading model") for s in stages), stages
    assert hub.downloads(f"/demucs/t/{GOOD}") == 1, hub.requests  # two jobs, one download
    landed = models_dir / "torch" / "hub" / "checkpoints" / hub.names[GOOD]
    assert landed.is_file()
    again = wait_job(client, submit(client, upload, model="htdemucs")["id"], timeout=120)
    assert again["status"] == "done" and hub.downloads(f"/demucs/t/{GOOD}") == 1


def test_the_hugging_face_path_fetches_a_bag_into_the_hub_cache(
    client, upload, online, hub, models_dir
):
    """htdemucs_ft: Demucs' get_model asks the hub first (HEAD for the ETag, commit and size,
    then GET), so its four members land in the Hugging Face cache, not the legacy repo."""
    job = wait_job(client, submit(client, upload, model="htdemucs_ft")["id"], timeout=240)
    assert job["status"] == "done", job
    assert job["model"] == "htdemucs_ft" and job["stems"] == FOUR
    assert hub.downloads(f"/{HF_REPO}/resolve/main/") == 5, hub.requests  # yaml + 4 members
    assert hub.requests[f"HEAD /{HF_REPO}/resolve/main/htdemucs_ft.yaml"] >= 1
    repo = models_dir / "huggingface" / "hub" / "models--adefossez--HTDemucs-ft"
    assert (repo / "refs" / "main").read_text() == COMMIT
    assert len(list((repo / "snapshots" / COMMIT).glob("*.safetensors"))) == 4
    assert not list((repo / "blobs").glob("*.incomplete"))
    legacy = models_dir / "torch" / "hub" / "checkpoints"
    bag = yaml.safe_load((hub.remote_root / "htdemucs_ft.yaml").read_text())["models"]
    assert not [p for p in legacy.iterdir() if p.name.split("-")[0] in bag]


def test_open_unmix_files_are_fetched_through_torch_hub_and_hash_checked(
    client, upload, online, hub, models_dir
):
    """The zenodo files at random bytes: torch.hub's check of the SHA-256 prefix in each name
    refuses the first one; the job fails saying what to do, and nothing stays in the cache.
    (A successful Open-Unmix download cannot be stood in: the hashes are in the file names.)"""
    job = wait_job(client, submit(client, upload, model="umxhq")["id"], timeout=120)
    assert job["status"] == "failed", job
    message = job["error"]["message"]
    assert "umxhq" in message and "fetch-models umxhq" in message, message
    assert "hash" in message.lower(), message
    vocals = HUB_FILES["umxhq"]["vocals"]
    assert hub.downloads(f"/zenodo/records/{RECORDS['umxhq']}/files/{vocals}") == 1
    checkpoints = models_dir / "torch" / "hub" / "checkpoints"
    umx = set(HUB_FILES["umxhq"].values())
    assert not [p.name for p in checkpoints.iterdir() if p.name.split(".")[0] + ".pth" in umx]


def test_a_roformer_by_name_is_fetched_with_its_progress_shown(
    client, upload, online, hub, models_dir
):
    """Asked for as a chain's second model first (fetched before the job plans, like the first
    stage's), then by name: one download of each file for both jobs."""
    job = submit(client, upload, model="dsp", chain="vocals>bs_roformer_viperx")
    stages, deadline = [], time.monotonic() + 180
    while time.monotonic() < deadline:
        state = client.get(f"/api/jobs/{job['id']}").json()
        if not stages or stages[-1] != state["stage"]:
            stages.append(state["stage"])
        if state["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert state["status"] == "done", state
    assert state["model"] == "dsp"
    assert state["stems"] == ["vocals-vocals", "vocals-other", "drums", "bass", "other"]
    shown = [re.fullmatch(r"downloading model \((.+) of (.+) MB\)", s) for s in stages]
    figures = [(float(m[1]), float(m[2])) for m in shown if m]
    assert figures, stages  # e.g. downloading model (0.3 of 2.7 MB)
    assert {total for _, total in figures} == {round(hub.viperx_bytes / 1e6, 1)}, figures
    assert any(0 < done < total for done, total in figures), figures
    assert [d for d, _ in figures] == sorted(d for d, _ in figures), figures
    folder = models_dir / "roformer"
    assert sorted(p.name for p in folder.iterdir() if "viperx" in p.name or "317" in p.name) == [
        *sorted(rs.CHECKPOINTS["bs_roformer_viperx"].files)
    ]
    again = wait_job(client, submit(client, upload, model="bs_roformer_viperx")["id"], 120)
    assert again["status"] == "done" and again["stems"] == ["vocals", "other"]
    for file in rs.CHECKPOINTS["bs_roformer_viperx"].files:  # one download each, for both jobs
        assert hub.downloads(f"/roformer/{file}") == 1, hub.requests
    print(f"\nstages of the chained job that fetched bs_roformer_viperx: {stages}")


def test_a_roformer_checkpoint_that_does_not_load_is_not_kept(
    client, upload, online, hub, models_dir
):
    job = wait_job(client, submit(client, upload, model="mel_band_roformer_kj")["id"], 120)
    assert job["status"] == "failed", job
    message = job["error"]["message"]
    assert "mel_band_roformer_kj" in message and "fetch-models mel_band_roformer_kj" in message
    assert "does not load" in message, message
    ckpt, config = rs.CHECKPOINTS["mel_band_roformer_kj"].files
    folder = models_dir / "roformer"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(ckpt)]
    assert (folder / config).is_file()  # read as a config before it was kept
    again = wait_job(client, submit(client, upload, model="mel_band_roformer_kj")["id"], 120)
    assert again["status"] == "failed"  # tried again, not trusted from the first time
    assert hub.downloads(f"/roformer/{ckpt}") == 2, hub.requests


def test_corrupt_download_fails_the_job_and_keeps_nothing(client, upload, online, hub, models_dir):
    job = wait_job(client, submit(client, upload, model="htdemucs_6s")["id"], timeout=120)
    assert job["status"] == "failed", job
    message = job["error"]["message"]
    assert "htdemucs_6s" in message and "fetch-models htdemucs_6s" in message, message
    assert "hash" in message.lower(), message
    checkpoints = models_dir / "torch" / "hub" / "checkpoints"
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(CORRUPT)]


def test_a_stalled_download_fails_with_a_timeout(client, upload, online, hub, models_dir):
    start = time.perf_counter()
    job = wait_job(client, submit(client, upload, model="hdemucs_mmi")["id"], timeout=60)
    assert job["status"] == "failed", job
    assert f"no data for {FETCH_TIMEOUT_S} s" in job["error"]["message"], job["error"]
    assert time.perf_counter() - start < 40
    checkpoints = models_dir / "torch" / "hub" / "checkpoints"
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(HANGS)]


def in_process_settings(hub, tmp_path: Path, monkeypatch, **extra) -> Settings:
    """Settings for a predictor run in this process against the fake hub (started if need
    be), its caches under `tmp_path`; Demucs' module globals, which the predictor points at
    the hub, are restored after the test."""
    import demucs.pretrained

    if hub.server is None:
        hub.start()
    monkeypatch.setattr(demucs.pretrained, "ROOT_URL", demucs.pretrained.ROOT_URL)
    monkeypatch.setattr(demucs.pretrained, "REMOTE_ROOT", demucs.pretrained.REMOTE_ROOT)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return Settings(_env_file=None, models_dir=tmp_path, **{**online_settings(hub), **extra})


def test_auto_fetch_off_asks_no_hub(hub, tmp_path, monkeypatch):
    """In process: the predictor with AUTO_FETCH=false neither offers nor fetches."""
    from fastapi.testclient import TestClient

    from gateway.options import JobOptions, resolve_options
    from prediction.channel_predictor import create_app

    settings = in_process_settings(hub, tmp_path, monkeypatch, auto_fetch=False)
    before = sum(hub.requests.values())
    with TestClient(create_app(settings)) as predictor:
        infos = {i["name"]: i for i in predictor.get("/models").json()}
        assert not infos["htdemucs"]["fetchable"]
        assert "AUTO_FETCH=false" in infos["htdemucs"]["reason"]
        r = predictor.post("/models/htdemucs/fetch")
        assert r.status_code == 422, r.text
    from common.interfaces import SeparatorInfo

    resolved = resolve_options(
        JobOptions(), {n: SeparatorInfo.model_validate(i) for n, i in infos.items()}
    )
    assert resolved.model == "dsp"
    assert sum(hub.requests.values()) == before


@pytest.mark.parametrize("prefetch", ["auto", "none"])
def test_the_predictor_fetches_the_default_model_at_start(hub, tmp_path, monkeypatch, prefetch):
    """In process: a predictor started online with htdemucs missing reports healthy at once
    and downloads htdemucs (what model=auto picks first) in the background, slowly here, then
    loads it; a job's fetch meanwhile joins that download. PREFETCH_MODELS=none fetches nothing
    until asked."""
    from fastapi.testclient import TestClient

    from prediction.channel_predictor import create_app

    settings = in_process_settings(
        hub, tmp_path, monkeypatch, compile_models="off", prefetch_models=prefetch
    )
    good = f"/demucs/t/{hub.names[GOOD]}"
    monkeypatch.setattr(hub, "slow", hub.slow | {good})  # ~4 s: the start is seen mid-download
    before = hub.downloads(good)
    landed = tmp_path / "torch" / "hub" / "checkpoints" / hub.names[GOOD]
    with TestClient(create_app(settings)) as predictor:
        started = time.monotonic()
        assert predictor.get("/health").status_code == 200  # not held up by the download
        assert not predictor.get("/models/htdemucs").json()["available"]
        if prefetch == "none":
            time.sleep(3)
            assert hub.downloads(good) == before and not landed.exists()
            return
        progress, joined = [], []
        while time.monotonic() - started < 60:
            info = predictor.get("/models/htdemucs").json()
            if info["available"]:
                break
            if info.get("download") and not progress:  # a job's fetch, mid-download
                fetch = threading.Thread(
                    target=lambda: joined.append(predictor.post("/models/htdemucs/fetch"))
                )
                fetch.start()
            progress += [info["download"]] if info.get("download") else []
            time.sleep(0.1)
        assert info["available"], info
        fetch.join(30)
        assert any(0 < p["bytes"] < (p["total"] or 0) for p in progress), progress
        assert [r.status_code for r in joined] == [200] and joined[0].json()["available"]
        assert landed.is_file()
        assert hub.downloads(good) == before + 1, hub.requests  # the job's fetch joined it
        deadline = time.monotonic() + 60  # loaded and warmed up once fetched
        while "htdemucs" not in predictor.app.state.registry.loaded_names():
            assert time.monotonic() < deadline, "htdemucs was fetched but never loaded"
            time.sleep(0.2)
