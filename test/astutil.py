"""A real AST architecture at random weights, saved where a hub download of `AST_MODEL_ID`
lands (the blobs / snapshots / refs layout of the Hugging Face cache), with AudioSet's 527
class names as its labels."""

from __future__ import annotations

import csv
import hashlib
import shutil
from functools import lru_cache
from pathlib import Path

from common.constants import AST_MODEL_ID

LABELS_CSV = Path(__file__).parent / "resources" / "audioset_class_labels.csv"


@lru_cache(maxsize=1)
def audioset_labels() -> list[str]:
    with open(LABELS_CSV, newline="") as f:
        return [row["display_name"] for row in csv.DictReader(f)]


def write_tiny_ast(hf_home: Path, *, full_size: bool = False) -> str:
    """Save an AST (2 small layers, or the full base size) with random weights as
    `AST_MODEL_ID` under `<hf_home>/hub`. Returns the snapshot's commit hash."""
    from transformers import ASTConfig, ASTForAudioClassification

    labels = audioset_labels()
    size = (
        {}
        if full_size
        else dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    )
    config = ASTConfig(
        **size,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    staging = hf_home / "staging"
    ASTForAudioClassification(config).save_pretrained(staging)
    repo = hf_home / "hub" / f"models--{AST_MODEL_ID.replace('/', '--')}"
    commit = hashlib.sha1(b"random AST" + bytes(full_size)).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in staging.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.move(file, repo / "blobs" / blob)
        (snapshot / file.name).symlink_to(Path("..") / ".." / "blobs" / blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    shutil.rmtree(staging)
    return commit
