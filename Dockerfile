# One image for all six audiosplit services; docker-compose.yml picks the service with `command`
# and sets each one's healthcheck. Alone it runs the gateway:
#   docker build -t audiosplit . && docker run -p 8000:8000 audiosplit
FROM python:3.11-slim

# torch comes from the PyTorch index, never from the project's dependencies (pyproject.toml leaves
# it out on purpose). CPU wheels by default; a CUDA image passes another index, e.g.
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# A C++ compiler for torch.compile: with one, the predictor compiles the HTDemucs core at start-up
# (COMPILE_MODELS=auto), and a whole job takes 0.93x Demucs' own time on a 2-core CPU against
# 1.13-1.16x eager (README, "Demucs speed"). Without one the services still run, eager.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

# The largest layer and the one that changes least, so it comes first.
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0

# openunmix imports torchaudio. The PyPI wheel's compiled extensions under torchaudio/lib/ link
# against CUDA libraries that a CPU image lacks; with them deleted torchaudio imports as pure
# Python, which is all openunmix needs. --no-deps keeps pip from touching the torch above.
RUN pip install --no-deps torchaudio==2.11.0 \
    && site_packages="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && find "${site_packages}/torchaudio/lib" -name '*.so*' -delete

# Dependencies before the source, so that editing the code does not reinstall them. The
# constraint holds torch at the build installed above whatever a requirement asks for.
COPY pyproject.toml README.md ./
RUN python -c 'import torch; print(f"torch=={torch.__version__}")' > /etc/pip-constraints.txt \
    && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['models']))" > /tmp/requirements.txt \
    && pip install -c /etc/pip-constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# MSST's MDX23C and SCNet networks (prediction/msst_separator.py): its wheel pins torch<2.12 and
# lists training packages; --no-deps keeps the torch above. Its model modules need only
# ml-collections, which the models extra installed.
RUN pip install --no-deps msst==0.1.0

COPY deploy/install-music-models.sh /tmp/
RUN bash /tmp/install-music-models.sh python && rm /tmp/install-music-models.sh

# The page's one library (speed and pitch), pinned by package-lock.json and served by the gateway
# from /app/node_modules. npm is needed only here: removed again in the same layer.
COPY package.json package-lock.json ./
RUN apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
    && apt-get purge -y --auto-remove npm \
    && rm -rf /var/lib/apt/lists/* /root/.npm

COPY common/ common/
COPY gateway/ gateway/
COPY transforms/ transforms/
COPY prediction/ prediction/
RUN pip install -c /etc/pip-constraints.txt ".[models]" && rm -rf build ./*.egg-info

# Runs as an unprivileged user. /data and /models belong to it, so a named volume mounted there
# starts out writable; a bind-mounted ./models keeps the host's owner (see docker-compose.yml).
RUN groupadd --gid 10001 audiosplit \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin audiosplit \
    && mkdir -p /data /models/huggingface /models/torch /models/torchinductor \
    && chown -R 10001:10001 /data /models
USER 10001:10001

# librosa's numba kernels are compiled at start-up (fft and cqt warm up before they report
# healthy) and cached; site-packages is not writable by the service's user.
ENV BIND_HOST=0.0.0.0 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    DATA_DIR=/data \
    MODELS_DIR=/models \
    HF_HOME=/models/huggingface \
    TORCH_HOME=/models/torch

# glibc malloc kept from returning torch's buffers to the OS between segments, and one arena
# for the worker threads that run the models (gateway/stack.py says what each one saved)
ENV MALLOC_ARENA_MAX=1 \
    MALLOC_MMAP_THRESHOLD_=17179869184 \
    MALLOC_TRIM_THRESHOLD_=17179869184 \
    MALLOC_TOP_PAD_=1073741824

# gateway, fft, cqt, tone identifier, channel predictor, channel fuser
EXPOSE 8000 8001 8002 8004 8005 8006

CMD ["python", "-m", "uvicorn", "--factory", "gateway.app:create_app", "--host", "0.0.0.0", "--port", "8000"]
