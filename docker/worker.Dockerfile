# A GPU training worker: one Celery process, one task at a time, on the GPU the container is given.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md alembic.ini ./
COPY sagan_core sagan_core
COPY store store
COPY api api
COPY worker worker
COPY sagan_cli sagan_cli
COPY migrations migrations
# The image's torch/torchvision satisfy the pins, so pip keeps them (CUDA builds).
RUN pip install -e .

# SIGTERM (docker stop) is Celery's warm shutdown: the running job saves a checkpoint and goes back
# to the queue; give it time with `stop_grace_period` in compose.
CMD ["sagan", "worker", "--concurrency", "1"]
