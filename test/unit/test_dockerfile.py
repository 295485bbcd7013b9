"""Static checks of the Dockerfile: no Docker engine is needed (or present in CI)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
SOURCE_DIRS = ("common", "gateway", "transforms", "prediction")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; comments dropped, continued lines joined."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def args_of(steps, keyword: str) -> list[str]:
    return [args for kw, args in steps if kw == keyword]


def test_base_image_is_python_311_slim(steps):
    assert args_of(steps, "FROM") == ["python:3.11-slim"]


def test_torch_is_pinned_and_comes_from_the_chosen_index(steps):
    runs = " ".join(args_of(steps, "RUN"))
    assert re.search(r"\btorch==2\.13\.0\b", runs)
    assert re.search(r"--index-url\s+\"?\$\{?TORCH_INDEX\}?", runs)
    assert any(
        a.startswith("TORCH_INDEX=https://download.pytorch.org/whl/cpu")
        for a in args_of(steps, "ARG")
    )


def test_torchaudio_is_pure_python(steps):
    runs = args_of(steps, "RUN")
    [install] = [r for r in runs if "torchaudio==2.11.0" in r]
    assert "--no-deps" in install
    # its compiled extensions need CUDA libraries: deleted from torchaudio/lib/
    assert re.search(r"torchaudio/lib\S*.*-name\s+'\*\.so\*'\s+-delete", install)


def test_a_cxx_compiler_is_installed_for_the_compiled_model_core(steps):
    # COMPILE_MODELS=auto compiles on the CPU only where inductor finds a C++ compiler
    installs = [r for r in args_of(steps, "RUN") if "apt-get install" in r]
    assert any(re.search(r"\bg\+\+(\s|$)", r) for r in installs), installs
    assert all("rm -rf /var/lib/apt/lists" in r for r in installs)


def test_torch_installed_before_the_project(steps):
    runs = args_of(steps, "RUN")
    torch_step = next(i for i, r in enumerate(runs) if "torch==2.13.0" in r)
    project_step = next(
        i for i, r in enumerate(runs) if re.search(r"pip install .*\.\[models\]", r)
    )
    assert torch_step < project_step


def test_runs_as_non_root(steps):
    users = args_of(steps, "USER")
    assert users, "no USER instruction: the services would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_workdir_is_app(steps):
    assert args_of(steps, "WORKDIR")[0] == "/app"


def test_source_and_metadata_are_copied(steps):
    copied = " ".join(args_of(steps, "COPY"))
    for source in (*SOURCE_DIRS, "pyproject.toml", "README.md"):
        assert re.search(rf"(^|\s){re.escape(source)}/?(\s|$)", copied), source


@pytest.mark.parametrize("source", SOURCE_DIRS)
def test_copied_source_dir_exists(source):
    assert (REPO_ROOT / source / "__init__.py").is_file()


def test_default_command_is_the_gateway(steps):
    [cmd] = args_of(steps, "CMD")
    assert "gateway.app:create_app" in cmd


def test_dockerignore_keeps_local_state_out_of_the_context():
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "data", "models/*", ".git"} <= patterns
    # the image copies these; an ignore rule would break the build
    for needed in (*SOURCE_DIRS, "pyproject.toml", "README.md"):
        assert needed not in patterns
