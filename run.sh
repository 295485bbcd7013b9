#!/usr/bin/env bash
# audiosplit: ./run.sh install | up | test | separate FILE... | fetch-models [NAME...] | bench
set -euo pipefail
CALLER_DIR="$PWD"   # `separate` takes paths relative to where it was called from
cd "$(dirname "$0")"
REPO="$PWD"

VENV=.venv
PY="$VENV/bin/python"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"       # CPU wheel here; set e.g. a CUDA build elsewhere
TORCHAUDIO_SPEC="${TORCHAUDIO_SPEC:-torchaudio==2.11.0}"
MSST_SPEC="${MSST_SPEC:-msst==0.1.0}"               # MDX23C and SCNet (MSST's own classes)
STAMP="$VENV/.audiosplit-installed"

say() { printf '[audiosplit] %s\n' "$*" >&2; }

quiet_pip() {
  # pip warns about every missing entry of an extra local index some machines configure;
  # keep its real messages, drop that noise (pipefail keeps pip's exit status).
  "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
}

install_stamp() {
  # Re-install when the dependency list or this script's install recipe changes.
  cat pyproject.toml "$0" deploy/install-music-models.sh package-lock.json | sha256sum | cut -c1-16
}

install() {
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(install_stamp)" ]]; then
    say "install: already up to date ($VENV)"
    return
  fi
  local python="${PYTHON:-}"
  if [[ -z "$python" ]]; then
    for candidate in python3.11 python3.12 python3; do
      if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        python="$candidate"; break
      fi
    done
  fi
  [[ -n "$python" ]] || { say "install: needs Python >= 3.11"; exit 1; }
  local start=$SECONDS
  if [[ ! -x "$PY" ]]; then
    say "install: creating $VENV with $($python --version)"
    "$python" -m venv "$VENV"
  fi
  local pip=(quiet_pip "$PY" -m pip install --disable-pip-version-check -q)
  # torch first and pinned, so that no later requirement range can pull a multi-GB CUDA build.
  say "install: $TORCH_SPEC"
  "${pip[@]}" "$TORCH_SPEC"
  local constraints="$VENV/constraints.txt"
  "$PY" -c 'import torch; print(f"torch=={torch.__version__}")' > "$constraints"
  say "install: project dependencies from pyproject.toml (with the models and test extras)"
  "$PY" - > "$VENV/requirements.txt" <<'EOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
for req in project["dependencies"] + extras["models"] + extras["test"]:
    print(req)
EOF
  "${pip[@]}" -c "$constraints" -r "$VENV/requirements.txt"
  # openunmix imports torchaudio. The only torchaudio that installs beside torch 2.13 is 2.11,
  # whose compiled extensions need CUDA libraries and make `import torchaudio` fail on a CPU
  # machine. Without them torchaudio runs as pure Python (all openunmix and transformers use).
  say "install: $TORCHAUDIO_SPEC without dependencies (it would replace torch otherwise)"
  "${pip[@]}" --no-deps "$TORCHAUDIO_SPEC"
  if ! "$PY" -c 'import torchaudio' 2>/dev/null; then
    local libdir
    libdir="$("$PY" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("torchaudio").origin).parent / "lib")')"
    say "install: torchaudio's compiled extensions do not load here; removing $libdir/*.so so it runs as pure Python"
    rm -f "$libdir"/*.so
  fi
  # MSST's wheel (MDX23C and SCNet networks, its reference demix) pins torch<2.12 and lists its
  # training and plotting packages; its model modules import only ml-collections (pyproject.toml)
  # beside torch, and `import msst` itself only the standard library and PyYAML.
  say "install: $MSST_SPEC without dependencies (it would replace torch otherwise)"
  "${pip[@]}" --no-deps "$MSST_SPEC"
  say "install: BeatNet and Basic Pitch (weights in their wheels) without their declared dependencies"
  bash deploy/install-music-models.sh "$PY"
  say "install: the project itself (editable), for the \`audiosplit\` command"
  "${pip[@]}" --no-deps -e .
  install_browser
  install_page_library
  install_postgres
  command -v fluidsynth >/dev/null && [[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]] \
    || apt_install "fluidsynth fluid-soundfont-gm" "the analysis tests on General MIDI songs"
  "$PY" -c 'import torch, torchaudio, demucs.api, openunmix, fastapi, av, soxr, msst.models.scnet, msst.models.mdx23c_tfc_tdf_v3' \
    || { say "install: imports failed after install"; exit 1; }
  install_kubectl
  install_stamp > "$STAMP"
  say "install: done in $((SECONDS - start))s ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
}

apt_install() {
  # apt_install PACKAGES WHAT: install Debian packages (space-separated) as root; without root or apt-get, or when
  # apt-get fails, say what will skip (the tests that need it skip with the package's name).
  local package=$1 what=$2
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    say "install: $package (apt-get) for $what"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $package; } >/dev/null 2>&1; then
      say "install: apt-get could not install $package; $what will skip"
    fi
  else
    say "install: no root apt-get here to install $package; $what will skip (install Debian's '$package' package to run them)"
  fi
}

install_browser() {
  # The browser tests drive Debian's chromium through Playwright (Playwright's own browser
  # download needs an internet this machine does not have).
  command -v chromium >/dev/null || apt_install chromium "the browser tests"
}

install_page_library() {
  # The page's speed and pitch (Signalsmith Stretch, WASM in an AudioWorklet): one npm package,
  # pinned in package-lock.json and served by the gateway from node_modules (gateway/page.py).
  command -v npm >/dev/null || apt_install npm "the page's speed and pitch"
  if ! command -v npm >/dev/null; then
    say "install: no npm; the page plays without speed and pitch (the gateway answers 503 for its library)"
    return
  fi
  say "install: the page's library (npm ci from package-lock.json)"
  npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null \
    || { say "install: npm ci failed"; exit 1; }
}

install_kubectl() {
  # test/unit/deploy renders deploy/k8s with `kubectl kustomize` (a kubectl whose kustomize is
  # v4 or later; with an older one, or none, it checks a Python render of the same files alone).
  command -v kubectl >/dev/null || apt_install kubernetes-client "the kubectl part of the Kubernetes manifest tests"
}

install_postgres() {
  # The store and several-gateway tests and `up --scaled` start a real PostgreSQL server
  # (Debian's binaries, run as an unprivileged user on a loopback port); the tests skip without it.
  if command -v pg_ctl >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; then return; fi
  apt_install postgresql "the PostgreSQL tests"
}

ensure_installed() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(install_stamp)" ]] || install
}

usage() {
  cat >&2 <<'EOF'
usage: ./run.sh COMMAND [ARGS]
  install                      create .venv and install everything, the `audiosplit` command and
                               (as root on Debian) chromium and postgresql for the browser and
                               PostgreSQL tests; idempotent
  up [--scaled]                start the six services in the foreground (gateway on
                               http://127.0.0.1:8000, the page); Ctrl-C stops them.
                               --scaled: a real PostgreSQL (data/postgres) and S3 server
                               (data/s3), two gateways (:8000 and :8010), two predictors,
                               one of each other service
  test [PYTEST ARGS]           ruff, then the test suite (fast by default; -m slow for the slow
                               ones; e.g. test test/browser -x)
  separate FILE... [OPTIONS]   separate songs, paths relative to where you are, stems written to
                               ./<song>/ (or --out DIR); uses the running stack or starts a
                               temporary one. OPTIONS: --model M (auto), --quality preview|render,
                               --stems all|vocals|drums|bass|other, --format wav|wav16|wav24|
                               flac|flac16|mp3, --clip rescale|clamp, --no-analysis, --out DIR,
                               --url URL; `.venv/bin/audiosplit separate --help` explains each
  fetch-models [NAME...]       download model weights into models/ (needs a network; default:
                               htdemucs ast)
  bench NAME [ARGS]            run bench/NAME.py, which prints figures (ls bench/)
  help                         this text
EOF
}

# Measured here: glibc's defaults return torch's large buffers to the OS after every segment and
# fault them in again; keeping them saves ~0.9 s of page faults per htdemucs segment. One arena:
# the predictor runs models in worker threads, whose own arenas ignore these settings (a segment
# took 2.7-4.8 s there against 2.2 s on the main thread; 2.3 s with one arena).
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-1}"
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-17179869184}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-17179869184}"
export MALLOC_TOP_PAD_="${MALLOC_TOP_PAD_:-1073741824}"

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  install) install ;;
  up)
    ensure_installed
    exec "$PY" -m gateway.stack up "$@"   # --scaled: PostgreSQL, S3, two gateways, two predictors
    ;;
  test)
    ensure_installed
    "$PY" -m ruff check .
    "$PY" -m ruff format --check .
    exec "$PY" -m pytest --durations=30 "$@"
    ;;
  separate)
    ensure_installed
    cd "$CALLER_DIR"
    exec "$REPO/$VENV/bin/audiosplit" separate --start-stack "$@"
    ;;
  fetch-models)
    ensure_installed
    exec "$PY" -m prediction.fetch "$@"
    ;;
  bench)
    ensure_installed
    [[ $# -ge 1 ]] || { ls bench/*.py >&2; exit 2; }
    name="$1"; shift
    exec "$PY" "bench/${name%.py}.py" "$@"
    ;;
  ""|-h|--help|help) usage ;;
  *) usage; exit 2 ;;
esac
