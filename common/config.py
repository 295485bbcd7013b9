"""Settings of every service, read from the environment (and `.env` if present).

One class for the whole stack so one environment describes one deployment; each service reads
only its part. Obtain it through `get_settings()` so tests can build their own `Settings(...)`.
Service URLs are comma-separated lists: several replicas per service are allowed, and a URL
whose host resolves to several addresses counts as several replicas (see `common.replicas`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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

    # where this process listens (run.sh and compose set these per service)
    bind_host: str = "127.0.0.1"
    gateway_port: int = 8000
    fft_port: int = 8001
    cqt_port: int = 8002
    tone_port: int = 8004
    predictor_port: int = 8005
    fuser_port: int = 8006

    # where the other services are; comma-separated replica lists. Empty: this machine at the
    # service's port setting (FFT_PORT …), so moving the ports moves what the gateway calls too
    fft_urls: str = ""
    cqt_urls: str = ""
    tone_urls: str = ""
    predictor_urls: str = ""
    fuser_urls: str = ""

    data_dir: Path = REPO_ROOT / "data"
    models_dir: Path = REPO_ROOT / "models"

    # the job store: empty = the SQLite file `<data dir>/jobs.sqlite3` (where it always lived),
    # or `postgresql://user:pass@host:5432/db` (psycopg 3) so several gateways share the work
    database_url: str = ""
    # a job is run by one gateway at a time under a lease of this many seconds, renewed every
    # third of it; a dead gateway's job is taken over within lease_s + claim_poll_s
    lease_s: float = Field(default=30.0, gt=0, le=300)
    claim_poll_s: float = Field(default=2.0, gt=0, le=60)  # how often idle workers look for work
    # how long a store call retries while the database is unreachable (restarting) before failing
    db_retry_s: float = Field(default=20.0, ge=0)
    # names this gateway in leases; empty: hostname:port (stable across restarts, so a gateway
    # that comes back takes its own jobs again at once instead of waiting for the lease)
    gateway_id: str = ""

    # where a job's durable files live (common/storage.py): empty = under the data dir, or
    # `s3://bucket/prefix` (S3_ENDPOINT_URL for a non-AWS server; credentials from the standard
    # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION, read by boto3 itself)
    storage_url: str = ""
    s3_endpoint_url: str = ""
    # how long a storage call retries while the object store is unreachable before the job
    # fails with a storage error
    storage_retry_s: float = Field(default=60.0, ge=0)

    # limits
    max_upload_bytes: int = C.MAX_UPLOAD_BYTES
    max_duration_s: float = C.MAX_DURATION_S
    min_duration_s: float = C.MIN_DURATION_S

    # orchestration
    job_concurrency: int = Field(default=2, ge=1)  # jobs separated at once
    chunk_concurrency: int = Field(default=2, ge=1)  # chunks of one job in flight
    request_timeout_s: float = 600.0  # one chunk on a slow CPU can take minutes
    chunk_retries: int = Field(default=3, ge=0)
    # how long a job waits for a service that refuses connections (restarting, loading a model)
    downstream_grace_s: float = Field(default=300.0, ge=0)
    default_model: str = "auto"
    # seconds between the starts of analysis windows (each 10.24 s long); rounded down to the
    # analysis frame grid (23.2 ms). Less than 10.24 overlaps windows: more AST forwards.
    analysis_hop_s: float = Field(default=C.ANALYSIS_WINDOW_S, ge=1.0, le=C.ANALYSIS_WINDOW_S)

    # retention, access
    retention_hours: float = Field(default=24.0, gt=0)  # results older than this are deleted
    sweep_every_s: float = Field(default=600.0, gt=0)
    api_keys: str = ""  # comma-separated; empty: no key needed
    rate_limit_per_minute: int = Field(default=0, ge=0)  # job submissions per client; 0: off
    cors_origins: str = ""  # comma-separated origins allowed to call the API from a browser

    # prediction
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    torch_threads: int = 0  # 0: all cores
    # torch threads of the tone identifier; 0: as torch_threads
    tone_threads: int = Field(default=0, ge=0)
    # windows per request and forward; 0: per device (1 on CPU, where batching measured
    # slower; GPU_BATCH on an accelerator)
    predictor_batch_size: int = Field(default=0, ge=0)
    # HTDemucs with its core compiled by torch.compile: auto (on the CPU when a C++ compiler
    # is found) | on | off; the compile (~1.5 min, seconds from its cache) happens at load
    compile_models: str = "auto"
    # first use fetches: missing weights are downloaded by the library's own download when a
    # hub answers (false: never; `./run.sh fetch-models` or copied files only)
    auto_fetch: bool = True
    # at start, the predictor fetches these weights in the background where they are missing
    # and fetchable (as above), then loads them: auto = what model=auto picks first (htdemucs;
    # DEFAULT_MODEL's models where it names some); a comma-separated list of names; none: off
    prefetch_models: str = "auto"
    hf_endpoint: str = "https://huggingface.co"  # huggingface_hub reads the same HF_ENDPOINT
    hf_hub_offline: bool = False  # HF_HUB_OFFLINE=1: no hub is asked, as huggingface_hub does
    # Demucs' legacy download root (empty: demucs.pretrained.ROOT_URL, dl.fbaipublicfiles.com)
    demucs_root_url: str = ""
    # a folder like demucs/remote (files.txt and <name>.yaml) naming Demucs' legacy files
    # (empty: the package's own; a mirror or a test hub of other files sets it)
    demucs_remote_root: str = ""
    # a mirror of Open-Unmix's zenodo files: <root>/records/<record>/files/<file> (empty: zenodo)
    umx_root_url: str = ""
    # a mirror of the RoFormer registry's files: <root>/<file name> for each checkpoint and
    # config (empty: the URLs as published, prediction/roformer_separator.py)
    roformer_root_url: str = ""
    fetch_timeout_s: float = Field(default=60.0, gt=0)  # a download stalled this long fails
    network_check_ttl_s: float = Field(default=60.0, ge=0)  # how long "hub answers" is trusted

    log_level: str = "INFO"

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
