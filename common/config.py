"""Settings of every service, read from the environment (and `.env` if present).

One class for the whole stack so one environment describes one deployment; each service reads
only its part. Obtain it through `get_settings()` so tests can build their own `Settings(...)`.
Service URLs are comma-separated lists: several replicas per service are allowed, and a URL
whose host resolves to several addresses counts as several replicas (see `common.replicas`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common import constants as C

REPO_ROOT = Path(__file__).resolve().parent.parent
# the services the gateway calls; each has a `<name>_port` and a `<name>_urls` setting
DOWNSTREAM_SERVICES = ("fft", "cqt", "tone", "predictor", "fuser")


def split_urls(value: str) -> list[str]:
    """'http://a:1, http://b:1/' -> ['http://a:1', 'http://b:1']"""
    return [u.strip().rstrip("/") for u in value.split(",") if u.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Every field carries its description: the docs' settings table is generated from them
    # (docs/hooks.py) and a unit test fails when one lacks it.

    # where this process listens (run.sh and compose set these per service)
    bind_host: str = Field(
        default="127.0.0.1",
        description="The address every service started here listens on; `0.0.0.0` for every "
        "interface (the services then call each other on 127.0.0.1).",
    )
    gateway_port: int = Field(
        default=8000,
        description="The gateway's port; also how the `audiosplit` command finds the gateway "
        "when `AUDIOSPLIT_URL` is not set.",
    )
    fft_port: int = Field(
        default=8001,
        description="The fft service's port: where it listens, and where it is called unless "
        "`FFT_URLS` is set.",
    )
    cqt_port: int = Field(
        default=8002,
        description="The cqt service's port: where it listens, and where it is called unless "
        "`CQT_URLS` is set.",
    )
    tone_port: int = Field(
        default=8004,
        description="The tone identifier's port: where it listens, and where fft calls it unless "
        "`TONE_URLS` is set.",
    )
    predictor_port: int = Field(
        default=8005,
        description="The channel predictor's port: where it listens, and where it is called "
        "unless `PREDICTOR_URLS` is set.",
    )
    fuser_port: int = Field(
        default=8006,
        description="The channel fuser's port: where it listens, and where it is called unless "
        "`FUSER_URLS` is set.",
    )

    # where the other services are; comma-separated replica lists
    fft_urls: str = Field(
        default="",
        description="Where the fft service is: comma-separated replica URLs, or a host name that "
        "resolves to several addresses. Empty: this machine at `FFT_PORT`.",
    )
    cqt_urls: str = Field(
        default="",
        description="Where the cqt service is (as `FFT_URLS`). Empty: this machine at `CQT_PORT`.",
    )
    tone_urls: str = Field(
        default="",
        description="Where the tone identifier is (as `FFT_URLS`). Empty: this machine at "
        "`TONE_PORT`.",
    )
    predictor_urls: str = Field(
        default="",
        description="Where the channel predictor is (as `FFT_URLS`). Empty: this machine at "
        "`PREDICTOR_PORT`.",
    )
    fuser_urls: str = Field(
        default="",
        description="Where the channel fuser is (as `FFT_URLS`). Empty: this machine at "
        "`FUSER_PORT`.",
    )

    data_dir: Path = Field(
        default=REPO_ROOT / "data",
        description="Jobs, uploads, results, logs and the SQLite job store, so a restart finds "
        "its jobs.",
    )
    models_dir: Path = Field(
        default=REPO_ROOT / "models",
        description="Model weights (`TORCH_HOME` and `HF_HOME` point under it unless set) and "
        "inductor's cache.",
    )

    # the job store, leases
    database_url: str = Field(
        default="",
        description="The job store. Empty: the SQLite file `<data dir>/jobs.sqlite3` (where it "
        "always lived); or `postgresql://user:pass@host:5432/db` (psycopg 3) so several gateways "
        "share the work.",
    )
    lease_s: float = Field(
        default=30.0,
        gt=0,
        le=300,
        description="A job is run by one gateway at a time under a lease of this many seconds, "
        "renewed every third of it; a dead gateway's job is taken over within "
        "`LEASE_S + CLAIM_POLL_S`.",
    )
    claim_poll_s: float = Field(
        default=2.0, gt=0, le=60, description="How often idle workers look for work (seconds)."
    )
    db_retry_s: float = Field(
        default=20.0,
        ge=0,
        description="How long a store call retries while the database is unreachable "
        "(restarting) before failing.",
    )
    gateway_id: str = Field(
        default="",
        description="Names this gateway in leases. Empty: `hostname:port` (stable across "
        "restarts, so a gateway that comes back takes its own jobs again at once instead of "
        "waiting for the lease).",
    )

    # where a job's durable files live (common/storage.py)
    storage_url: str = Field(
        default="",
        description="Where a job's durable files live. Empty: under the data dir; or "
        "`s3://bucket/prefix` (credentials from the standard `AWS_ACCESS_KEY_ID` / "
        "`AWS_SECRET_ACCESS_KEY` / `AWS_DEFAULT_REGION`, read by boto3 itself).",
    )
    s3_endpoint_url: str = Field(
        default="",
        description="The S3 server of `STORAGE_URL` when it is not AWS, e.g. `http://host:8333`.",
    )
    storage_retry_s: float = Field(
        default=60.0,
        ge=0,
        description="How long a storage call retries while the object store is unreachable "
        "before the job fails with a storage error.",
    )

    # limits
    max_upload_bytes: int = Field(
        default=C.MAX_UPLOAD_BYTES,
        description="The largest upload, enforced while streaming (413 past it).",
    )
    max_duration_s: float = Field(
        default=C.MAX_DURATION_S, description="The longest song, in seconds (422 past it)."
    )
    min_duration_s: float = Field(
        default=C.MIN_DURATION_S,
        description="The shortest song, in seconds: shorter uploads carry nothing to separate.",
    )

    # orchestration
    job_concurrency: int = Field(default=2, ge=1, description="Jobs separated at once.")
    chunk_concurrency: int = Field(default=2, ge=1, description="Chunks of one job in flight.")
    request_timeout_s: float = Field(
        default=600.0,
        description="How long (seconds) one of the gateway's calls to a service may take: one "
        "chunk on a slow CPU can take minutes.",
    )
    chunk_retries: int = Field(
        default=3,
        ge=0,
        description="How many times a failed call to the predictor or the fuser is retried before "
        "the job fails.",
    )
    downstream_grace_s: float = Field(
        default=300.0,
        ge=0,
        description="How long a job waits for a service that refuses connections (restarting, "
        "loading a model).",
    )
    default_model: str = Field(
        default="auto",
        description="The model of a job that names none: `auto`, a model name, or an ensemble.",
    )
    analysis_hop_s: float = Field(
        default=C.ANALYSIS_WINDOW_S,
        ge=1.0,
        le=C.ANALYSIS_WINDOW_S,
        description="Seconds between the starts of analysis windows (each 10.24 s long); rounded "
        "down to the analysis frame grid (23.2 ms). Less than 10.24 overlaps windows: more AST "
        "forwards.",
    )

    warm_up: bool = Field(
        default=True,
        description="The fft and cqt services warm up before they report healthy (librosa's "
        "kernels, AST's features, BeatNet, Basic Pitch: seconds of CPU each), so the first "
        "analysis does not wait for it; false: each loads on its first call (the tests' stacks, "
        "most of which run no analysis).",
    )
    beat_model: Literal["beatnet", "madmom"] = Field(
        default="beatnet",
        description="The beat, downbeat and tempo model (fft service): `beatnet` (CC BY 4.0) or "
        "`madmom` (madmom's own networks: CC BY-NC-SA 4.0, non-commercial use only; the job's "
        "analysis names the model and its licence).",
    )

    # retention, access
    retention_hours: float = Field(
        default=24.0,
        gt=0,
        description="Done and failed jobs are deleted with their files this many hours after "
        "their last change.",
    )
    sweep_every_s: float = Field(
        default=600.0,
        gt=0,
        description="How often the gateway sweeps expired jobs (it also sweeps at start-up).",
    )
    auth: Literal["open", "keys"] = Field(
        default="open",
        description="`open`: no key needed, every job belongs to one owner (a person on their "
        "own machine). `keys`: every /api route needs an `X-API-Key` made with `audiosplit keys "
        "create` (or listed in API_KEYS); each key is a tenant that sees only its own jobs.",
    )
    api_keys: str = Field(
        default="",
        description="Comma-separated API keys, sent as `X-API-Key`, each its own tenant; "
        "setting any switches keys on (as AUTH=keys does).",
    )
    webhook_secret: str = Field(
        default="",
        description="The `whsec_…` secret that signs webhooks of jobs made without a tenant's "
        "own secret (open mode, API_KEYS keys); empty: a random one per gateway start, which "
        "receivers cannot verify, so set it when you use callback_url.",
    )
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds a webhook receiver has to answer one attempt."
    )
    webhook_retry_hours: float = Field(
        default=24.0,
        gt=0,
        description="Hours a webhook is retried (with backoff) before it is given up as failed.",
    )
    webhook_backoff_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds before a webhook's second attempt; each later wait doubles, up to "
        "an hour.",
    )
    allow_private_urls: bool = Field(
        default=False,
        description="Let `url=` imports and webhook callbacks reach loopback, private and "
        "link-local addresses (refused by default: a server must not be made to fetch from its "
        "own network). For tests and a home server.",
    )
    url_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds to connect to, or to wait for bytes from, a `url=` import's server.",
    )
    url_deadline_s: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a `url=` import may take in all before it is cut (a slow server).",
    )
    idempotency_hours: float = Field(
        default=24.0,
        gt=0,
        description="Hours an `Idempotency-Key` names the job it made (for the same tenant).",
    )
    rate_limit_per_minute: int = Field(
        default=0,
        ge=0,
        description="Job submissions a minute per client address, shared by the gateways on one "
        "database; 0: off.",
    )
    cors_origins: str = Field(
        default="",
        description="Comma-separated origins allowed to call the API from a browser.",
    )

    # prediction
    device: str = Field(default="auto", description="`auto` | `cpu` | `cuda` | `cuda:N` | `mps`.")
    torch_threads: int = Field(default=0, description="Torch threads; 0: all cores.")
    tone_threads: int = Field(
        default=0, ge=0, description="Torch threads of the tone identifier; 0: as `TORCH_THREADS`."
    )
    predictor_batch_size: int = Field(
        default=0,
        ge=0,
        description="Windows per request and forward; 0: per device (1 on CPU, where batching "
        "measured slower; 4 on an accelerator).",
    )
    compile_models: str = Field(
        default="auto",
        description="HTDemucs with its core compiled by `torch.compile`: `auto` (on the CPU when "
        "a C++ compiler is found) | `on` | `off`; the compile (~1.5 min, seconds from its cache) "
        "happens at load.",
    )
    auto_fetch: bool = Field(
        default=True,
        description="First use fetches: missing weights are downloaded by the library's own "
        "download when a hub answers (false: never; `./run.sh fetch-models` or copied files only).",
    )
    prefetch_models: str = Field(
        default="auto",
        description="At start, the predictor fetches these weights in the background where they "
        "are missing and fetchable, then loads them: `auto` = what `model=auto` picks first "
        "(htdemucs; `DEFAULT_MODEL`'s models where it names some); a comma-separated list of "
        "names; `none`: off.",
    )
    hf_endpoint: str = Field(
        default="https://huggingface.co",
        description="The Hugging Face hub; huggingface_hub reads the same `HF_ENDPOINT`.",
    )
    hf_hub_offline: bool = Field(
        default=False,
        description="`HF_HUB_OFFLINE=1`: no hub is asked, as huggingface_hub does.",
    )
    demucs_root_url: str = Field(
        default="",
        description="Demucs' legacy download root (empty: `demucs.pretrained.ROOT_URL`, "
        "dl.fbaipublicfiles.com).",
    )
    demucs_remote_root: str = Field(
        default="",
        description="A folder like `demucs/remote` (`files.txt` and `<name>.yaml`) naming Demucs' "
        "legacy files (empty: the package's own; a mirror or a test hub of other files sets it).",
    )
    umx_root_url: str = Field(
        default="",
        description="A mirror of Open-Unmix's zenodo files: "
        "`<root>/records/<record>/files/<file>` (empty: zenodo).",
    )
    roformer_root_url: str = Field(
        default="",
        description="A mirror of the RoFormer registry's files: `<root>/<file name>` for each "
        "checkpoint and config (empty: the URLs as published, `prediction/roformer_separator.py`).",
    )
    fetch_timeout_s: float = Field(
        default=60.0, gt=0, description="A download stalled this long (seconds) fails."
    )
    network_check_ttl_s: float = Field(
        default=60.0, ge=0, description='How long (seconds) a "hub answers" check is trusted.'
    )
    model_info_ttl_s: float = Field(
        default=10.0,
        ge=0,
        description="How long (seconds) a gateway trusts the predictor's model list (which "
        "weights are present, which can be fetched).",
    )

    log_level: str = Field(
        default="INFO",
        description="The log level of every service (`DEBUG`, `INFO`, `WARNING`, `ERROR`); logs "
        "are one JSON object per line on stderr.",
    )

    @property
    def urls(self) -> dict[str, list[str]]:
        """Each downstream service's replica URLs: its `*_urls` setting, else its port here."""
        return {
            name: split_urls(getattr(self, f"{name}_urls"))
            or [f"http://{self.local_host}:{getattr(self, f'{name}_port')}"]
            for name in DOWNSTREAM_SERVICES
        }

    @property
    def local_host(self) -> str:
        """The address a service of this machine answers on: the bind address, or loopback when
        it binds every interface."""
        return "127.0.0.1" if self.bind_host in ("", "0.0.0.0", "::") else self.bind_host

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def store_url(self) -> str:
        """DATABASE_URL, or the SQLite file under the data dir that the store always used."""
        return self.database_url or f"sqlite:///{self.data_dir / 'jobs.sqlite3'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
