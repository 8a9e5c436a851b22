# A GPU training worker: one Celery process, one task at a time, on the GPU the container is given.
# The project's Python and the torch `make test` runs (constraints.txt): PyPI's Linux torch wheels are
# CUDA builds whose CUDA libraries come as nvidia-* wheels; the driver comes from the host
# (NVIDIA Container Toolkit).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /app

# torch.compile (the fast path, the default on CUDA) builds Triton's launcher and inductor's kernels
# with a C compiler at run time: a runtime-only image fails at the first step ("Failed to find C
# compiler"). The trainer falls back to the plain path when compiling fails, but should not have to.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# Torch first: a layer that survives code changes.
COPY constraints.txt ./
RUN pip install -c constraints.txt torch torchvision

COPY pyproject.toml README.md alembic.ini ./
COPY sagan_core sagan_core
COPY store store
COPY sweeps sweeps
COPY api api
COPY worker worker
COPY sagan_cli sagan_cli
COPY migrations migrations
RUN pip install -c constraints.txt -e .

# SIGTERM (docker stop) is Celery's warm shutdown: the running job saves a checkpoint and goes back
# to the queue; give it time with `stop_grace_period` in compose.
CMD ["sagan", "worker", "--concurrency", "1"]
