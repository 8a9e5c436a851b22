# The API container: CPU PyTorch is enough (it samples trained generators; training runs on workers).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Torch first, from the CPU index (no CUDA wheels), at the version `make test` runs
# (constraints.txt): a layer that survives code changes.
COPY constraints.txt ./
RUN pip install -c constraints.txt --index-url https://download.pytorch.org/whl/cpu torch torchvision

COPY pyproject.toml README.md alembic.ini ./
COPY sagan_core sagan_core
COPY store store
COPY sweeps sweeps
COPY api api
COPY worker worker
COPY sagan_cli sagan_cli
COPY migrations migrations
RUN pip install -c constraints.txt -e .

EXPOSE 8000
# Runs the migrations, then serves.
CMD ["sagan", "api", "--host", "0.0.0.0", "--port", "8000"]
