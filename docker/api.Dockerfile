# The API container: CPU PyTorch is enough (it samples trained generators; training runs on workers).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Torch first, from the CPU index: a layer that survives code changes, and no CUDA wheels.
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch>=2.4,<2.15" "torchvision>=0.19,<0.30"

COPY pyproject.toml README.md alembic.ini ./
COPY sagan_core sagan_core
COPY store store
COPY api api
COPY worker worker
COPY sagan_cli sagan_cli
COPY migrations migrations
RUN pip install -e .

EXPOSE 8000
# Runs the migrations, then serves.
CMD ["sagan", "api", "--host", "0.0.0.0", "--port", "8000"]
