"""A kustomize-free render of deploy/k8s, for machines whose kubectl is missing or too old
(Debian bookworm's kubernetes-client 1.20 embeds kustomize v2, which cannot read these
kustomizations). It does only what those kustomizations use: `resources` (files and
directories), `namespace`, `images` and strategic-merge `patches` (lists of named items merged
by name, other lists replaced). Where a recent kubectl exists, the tests check that it renders
the same objects as this does."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole"}


def render(directory: Path) -> list[dict]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        for doc in yaml.safe_load_all((directory / patch["path"]).read_text()):
            target = find(objects, doc["kind"], doc["metadata"]["name"])
            merged = merge(target, doc)
            objects[objects.index(target)] = merged
    if namespace := kustomization.get("namespace"):
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        for container in containers(objects):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                new_name = image.get("newName", name)
                new_tag = image.get("newTag", tag)
                container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
    return objects


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(matches) != 1:
        raise LookupError(f"a patch names {kind}/{name}: {len(matches)} such objects")
    return matches[0]


def merge(base, patch):
    """Strategic merge as far as these manifests need it."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and named(base) and named(patch):
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, b in enumerate(out) if b["name"] == item["name"]), None)
            if index is None:
                out.append(copy.deepcopy(item))
            else:
                out[index] = merge(out[index], item)
        return out
    return copy.deepcopy(patch)


def named(items: list) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def containers(objects: list[dict]):
    for obj in objects:
        spec = pod_spec(obj)
        if spec is not None:
            yield from spec.get("initContainers", [])
            yield from spec["containers"]
