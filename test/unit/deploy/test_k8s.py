"""deploy/k8s: every rendered object valid for Kubernetes, and wired the way the services and
docker-compose.yml are.

Rendered by `kubectl kustomize` where a kubectl with kustomize >= v4 is installed (the test
then also checks that test/unit/deploy/kustomize_lite.py renders the same), else by that small
renderer alone. Every object is validated with kubernetes-validate (strict: no unknown fields)
against the oldest and the newest Kubernetes it knows of our supported range.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from common.config import DOWNSTREAM_SERVICES, Settings
from test.unit.deploy.kustomize_lite import containers, pod_spec, render

REPO_ROOT = Path(__file__).resolve().parents[3]
K8S = REPO_ROOT / "deploy" / "k8s"
TARGETS = ("overlays/cpu", "overlays/gpu", "fetch-models")
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# service -> (port, module whose create_app it runs), as in docker-compose.yml
SERVICES = {
    "gateway": (8000, "gateway.app"),
    "fft": (8001, "transforms.fft"),
    "cqt": (8002, "transforms.cqt"),
    "tone": (8004, "prediction.tone_identifier"),
    "predictor": (8005, "prediction.channel_predictor"),
    "fuser": (8006, "prediction.channel_fuser"),
}
FANNED_OUT = {"fft", "cqt", "tone", "predictor", "fuser"}  # reached through headless Services
GPU_SERVICES = {"predictor", "tone"}
IMAGES = {"overlays/cpu": "audiosplit:latest", "overlays/gpu": "audiosplit:cuda"}
# read by libraries, not by Settings: torch and huggingface_hub; boto3's standard variables
LIBRARY_ENV = {"HF_HOME", "TORCH_HOME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
LIBRARY_ENV |= {"AWS_DEFAULT_REGION", "AWS_REGION", "AWS_SESSION_TOKEN"}
SECRET = "audiosplit-store"


def kubectl_with_kustomize() -> str | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run(
        [kubectl, "version", "--client"], capture_output=True, text=True, timeout=60
    ).stdout
    found = re.search(r"Kustomize Version: v(\d+)", out)
    return kubectl if found and int(found.group(1)) >= 4 else None


KUBECTL = kubectl_with_kustomize()


@pytest.fixture(scope="module", params=TARGETS)
def target(request) -> str:
    return request.param


def overlay_objects(name: str) -> list[dict]:
    """The objects of deploy/k8s/<name>: kubectl's render where it can, else the Python one."""
    if KUBECTL is None:
        return render(K8S / name)
    out = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(target) -> list[dict]:
    return overlay_objects(target)


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.fixture(scope="module", params=["overlays/cpu", "overlays/gpu"])
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, overlay_objects(request.param)


def setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def port_number(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


# --- valid for Kubernetes -------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates(rendered, version):
    assert rendered
    for obj in rendered:
        kubernetes_validate.validate(obj, version, strict=True)


def test_validation_catches_a_misspelt_field(overlay):
    # guards the test above: strict validation must refuse a typo in a pod spec
    _, objects = overlay
    deployment = dict(by_kind(objects, "Deployment")["gateway"])
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    probe = broken["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = probe
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def normalised(value):
    """Kustomize orders keys and merged list items its own way: compare without order."""
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [normalised(v) for v in value]
        if items and all(isinstance(i, dict) and "name" in i for i in items):
            return sorted(items, key=lambda i: i["name"])
        return items
    return value


def test_kubectl_and_the_python_render_agree(target):
    if KUBECTL is None:
        pytest.skip(
            "needs kubectl with kustomize >= v4 (Debian: apt-get install kubernetes-client, "
            "from trixie on; bookworm's 1.20 embeds kustomize v2): the Python render is "
            "checked alone"
        )
    ours = sorted(render(K8S / target), key=lambda o: (o["kind"], o["metadata"]["name"]))
    theirs = overlay_objects(target)
    theirs = sorted(theirs, key=lambda o: (o["kind"], o["metadata"]["name"]))
    assert [normalised(o) for o in ours] == [normalised(o) for o in theirs]


# --- the services, as docker-compose.yml runs them ------------------------------------------


def test_a_deployment_per_service_running_its_module_on_its_port(overlay):
    _, objects = overlay
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == set(SERVICES)
    for name, (port, module) in SERVICES.items():
        (container,) = pod_spec(deployments[name])["containers"]
        command = [str(a) for a in container["command"] + container.get("args", [])]
        assert command[:4] == ["python", "-m", "uvicorn", "--factory"], name
        assert f"{module}:create_app" in command, name
        assert command[command.index("--host") + 1] == "0.0.0.0", name
        assert command[command.index("--port") + 1] == str(port), name
        assert [p["containerPort"] for p in container["ports"]] == [port], name


def test_commands_are_compose_commands(overlay):
    _, objects = overlay
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    for name, deployment in by_kind(objects, "Deployment").items():
        (container,) = pod_spec(deployment)["containers"]
        assert [str(a) for a in container["command"]] == compose[name]["command"], name


def test_probes_ready_and_health_on_the_service_port(overlay):
    _, objects = overlay
    for name, deployment in by_kind(objects, "Deployment").items():
        (container,) = pod_spec(deployment)["containers"]
        port = SERVICES[name][0]
        for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
            check = container[probe]["httpGet"]
            assert check["path"] == path, f"{name} {probe}"
            assert port_number(container, check["port"]) == port, f"{name} {probe}"
        # liveness must not kill a pod that is still loading its model
        startup = container["startupProbe"]
        assert startup["httpGet"]["path"] == "/health"
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, name


def test_resource_requests_everywhere(rendered):
    for container in containers(rendered):
        requests = container["resources"]["requests"]
        assert {"cpu", "memory"} <= set(requests), container["name"]
        assert "memory" in container["resources"]["limits"], container["name"]


def test_one_image_per_overlay(overlay):
    name, objects = overlay
    assert {c["image"] for c in containers(objects)} == {IMAGES[name]}
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    cpu_image = IMAGES["overlays/cpu"]
    assert {s["image"] for s in compose.values()} == {cpu_image}  # the image compose builds


def test_gpu_overlay_requests_gpus_for_predictor_and_tone_only(overlay):
    name, objects = overlay
    for service, deployment in by_kind(objects, "Deployment").items():
        (container,) = pod_spec(deployment)["containers"]
        resources = container["resources"]
        wants = name == "overlays/gpu" and service in GPU_SERVICES
        for part in ("requests", "limits"):
            gpus = resources.get(part, {}).get("nvidia.com/gpu")
            assert (gpus == 1) if wants else gpus is None, f"{name} {service} {part}"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert (env.get("DEVICE") == "cuda") == wants, f"{name} {service}"


# --- discovery: headless Services for the fanned-out services -------------------------------


def test_services_select_their_pods(overlay):
    _, objects = overlay
    services = by_kind(objects, "Service")
    deployments = by_kind(objects, "Deployment")
    assert set(services) == set(SERVICES)
    for name, service in services.items():
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        selector = service["spec"]["selector"]
        assert selector.items() <= pod_labels.items(), name
        assert deployments[name]["spec"]["selector"]["matchLabels"] == selector, name
        (port,) = service["spec"]["ports"]
        (container,) = pod_spec(deployments[name])["containers"]
        assert port["port"] == SERVICES[name][0]
        assert port_number(container, port["targetPort"]) == SERVICES[name][0]
        headless = service["spec"].get("clusterIP") == "None"
        assert headless == (name in FANNED_OUT), f"{name}: headless={headless}"


def test_url_settings_name_the_headless_services(overlay):
    _, objects = overlay
    config = by_kind(objects, "ConfigMap")["audiosplit-config"]["data"]
    url_settings = {f"{service}_urls".upper() for service in DOWNSTREAM_SERVICES}
    assert url_settings <= set(config)
    for setting in url_settings:
        service = setting.removesuffix("_URLS").lower()
        assert config[setting] == f"http://{service}:{SERVICES[service][0]}", setting


def test_predictor_is_scaled_by_an_hpa(overlay):
    _, objects = overlay
    (hpa,) = by_kind(objects, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "predictor",
    }
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    # the HPA owns the count: a replicas field would fight it on every apply
    assert "replicas" not in by_kind(objects, "Deployment")["predictor"]["spec"]


# --- settings, secrets, volumes -------------------------------------------------------------


def env_names(objects: list[dict]) -> set[str]:
    names = set()
    maps = by_kind(objects, "ConfigMap")
    for container in containers(objects):
        names |= {e["name"] for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                names |= set(maps[source["configMapRef"]["name"]]["data"])
    return names


def test_every_env_var_is_a_setting_or_read_by_a_library(rendered):
    if not any(o["kind"] == "ConfigMap" for o in rendered):
        rendered = rendered + overlay_objects("overlays/cpu")  # the Job reads the overlay's
    unknown = env_names(rendered) - setting_names() - LIBRARY_ENV
    assert not unknown, f"not settings of common/config.py: {sorted(unknown)}"


def test_the_secret_example_names_settings_only():
    lines = (K8S / "store.env.example").read_text().splitlines()
    keys = {ln.split("=", 1)[0] for ln in lines if ln.strip() and not ln.startswith("#")}
    assert "DATABASE_URL" in keys
    unknown = keys - setting_names() - LIBRARY_ENV
    assert not unknown, f"not settings of common/config.py: {sorted(unknown)}"


def test_database_and_bucket_come_from_the_secret(overlay):
    _, objects = overlay
    for name, deployment in by_kind(objects, "Deployment").items():
        (container,) = pod_spec(deployment)["containers"]
        secrets = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
        # the gateways keep the job store; the gateways and the fuser write job files
        assert secrets == ([SECRET] if name in ("gateway", "fuser") else []), name
    # never in the manifests: the user creates it (README)
    assert not by_kind(objects, "Secret")


def test_volumes_are_mounted_where_the_settings_point(overlay):
    _, objects = overlay
    config = by_kind(objects, "ConfigMap")["audiosplit-config"]["data"]
    claims = by_kind(objects, "PersistentVolumeClaim")
    assert set(claims) == {"models", "data"}
    for claim in claims.values():
        # many pods on many nodes mount each of them
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    wanted = {"tone": ("models", "MODELS_DIR"), "predictor": ("models", "MODELS_DIR")}
    wanted |= {"gateway": ("data", "DATA_DIR"), "fuser": ("data", "DATA_DIR")}
    assert config["HF_HOME"].startswith(config["MODELS_DIR"] + "/")
    assert config["TORCH_HOME"].startswith(config["MODELS_DIR"] + "/")
    for name, deployment in by_kind(objects, "Deployment").items():
        spec = pod_spec(deployment)
        (container,) = spec["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        volumes = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", [])
        }
        if name in wanted:
            claim, setting = wanted[name]
            assert mounts == {claim: config[setting]}, name
            assert volumes == {claim: claim}, name
        else:
            assert not mounts, name


def test_fetch_job_runs_what_run_sh_fetch_models_runs():
    (job,) = render(K8S / "fetch-models")
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["python", "-m", "prediction.fetch"]
    assert "-m prediction.fetch" in (REPO_ROOT / "run.sh").read_text()
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config = by_kind(overlay_objects("overlays/cpu"), "ConfigMap")["audiosplit-config"]["data"]
    assert mounts == {"models": config["MODELS_DIR"]}
    assert pod_spec(job)["restartPolicy"] == "Never"
