"""Service settings, read from SAGAN_* environment variables (one class, one prefix)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sagan_core.config import MAX_INT, Limits  # torch-free: the core's config module only
from sagan_core.weights import hub_weights_path


def _split_list(value: object) -> object:
    """A list setting from the environment: a JSON list or comma-separated values."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part.strip() for part in text.split(",") if part.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGAN_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Root of everything the embedded mode keeps.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/sagan.db"
    )
    broker_url: str | None = Field(
        None, description="Celery broker; default kombu filesystem:// under <data_dir>/broker"
    )
    storage: Literal["local", "s3"] = "local"
    storage_dir: Path | None = Field(
        None, description="Local storage root; default <data_dir>/storage"
    )
    s3_bucket: str = "sagan"
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = Field(
        None,
        description="The S3 endpoint as users reach it (e.g. http://localhost:9000 where the "
        "services use http://minio:9000); only the presigned checkpoint URLs handed to users are "
        "signed for it. Default: SAGAN_S3_ENDPOINT_URL",
    )
    s3_region: str | None = None
    inception_weights: str | None = Field(
        None,
        description="Local path or storage key of torch-fidelity's Inception weights "
        "(weights-inception-2015-12-05-6726825d.pth)",
    )
    inception_download: bool = Field(
        False,
        description="Let workers download the Inception weights from torch-fidelity's GitHub "
        "release when SAGAN_INCEPTION_WEIGHTS is unset and torch hub's cache lacks them; off: "
        "IS/FID/KID jobs need the weights configured, and the API refuses them (422) otherwise",
    )
    train_queue: str = "train"
    pack_queue: str = Field(
        "pack",
        description="Celery queue of pack jobs (CPU work, never behind training): every "
        "`sagan worker` consumes it too; `sagan up` runs a worker of its own for it",
    )
    keep_checkpoints: int = Field(
        3,
        description="Newest checkpoints kept per job, besides those a model points at; 0 keeps all",
    )
    # Issue #24: training goes on while a checkpoint uploads (worker.uploads); off is the plain
    # synchronous path, kept to compare against (python -m worker.bench_checkpoint).
    background_uploads: bool = Field(
        True,
        description="Upload each checkpoint on a thread of its own while training goes on (one "
        "in flight: the next checkpoint waits for it); false: the training loop waits for it",
    )
    heartbeat_seconds: float = Field(
        10.0, description="How often a worker records that it is alive (per task and per process)"
    )
    stale_after_seconds: float = Field(
        60.0, description="A job whose worker is silent this long is taken over / requeued"
    )
    max_attempts: int = Field(
        3, description="A job whose worker is lost this many times ends failed (poison jobs)"
    )
    outage_retry_seconds: float = Field(
        120.0,
        description="How long a worker retries a database or storage call before it stops the "
        "run at its last checkpoint and requeues the job",
    )
    token_cache_seconds: float = Field(
        10.0,
        ge=0,
        description="How long an API process trusts a token it has looked up (0: ask the "
        "database every request); a revoked token stops working within this",
    )
    reap_every_seconds: float = Field(
        10.0, description="Period of the reaper and dispatcher (in `sagan up` and `sagan api`)"
    )
    dispatch_after_seconds: float = Field(
        30.0,
        description="A job queued this long and not claimed is sent again when the broker's "
        "queue is empty (its message was lost)",
    )
    ready_requires_worker: bool | None = Field(
        None, description="/readyz needs a live worker; default: in the embedded mode only"
    )
    worker_device: str = "auto"
    # Issue #24: what the API, the workers and `sagan up` write to stderr (store.log_format).
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines for people (text), or one JSON object a line for log collectors "
        "(json): time, level, logger, message, and job_id, worker and step where there is one",
    )
    # What only a worker knows (its job's GPU figures, upload times, outage retries), for
    # Prometheus: plain HTTP, no token, so it listens where the operator says (worker.metrics_port).
    worker_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve the worker's Prometheus metrics on this port"
    )
    worker_metrics_addr: str = Field(
        "127.0.0.1", description="The address the worker's metrics port binds (0.0.0.0: any)"
    )
    # Many GPUs per job (issue #15): a job of `gpus: N` goes to the queue of size N, which every
    # worker serving at least N GPUs consumes; the API refuses an N larger than every pool.
    worker_gpus: int | None = Field(
        None,
        ge=1,
        description="GPUs (processes) this worker gives one job: it consumes the queues of jobs "
        "of 1..N GPUs. Default: the CUDA devices it sees (1 without CUDA; a CPU worker given N "
        "runs N CPU processes)",
    )
    gpu_pools: Annotated[list[int] | None, NoDecode] = Field(
        None,
        description="Sizes (GPUs per worker) of the worker pools this deployment runs, e.g. "
        "1,8: a job asking for more GPUs than the largest is refused. Default: 1, or in the "
        "embedded mode SAGAN_WORKER_GPUS",
    )
    gpu_queues: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="The Celery queues whose workers have GPUs (e.g. train or "
        "train,train.gpus8): a training job that names no preset gets `paper` there and `tiny` "
        "elsewhere (CPU workers: the embedded service, CPU pools). Default: none",
    )
    auth: bool = Field(
        True,
        description="Require API tokens; off only for a service bound to 127.0.0.1 "
        "(every caller is then user 'local')",
    )
    admin_token: SecretStr | None = Field(
        None, description="A bootstrap admin token (user 'admin') for the distributed deployment"
    )
    max_active_jobs: int = Field(20, description="Queued + running jobs per owner; past it, 429")
    max_sweep_trials: int = Field(
        100, ge=1, le=10_000, description="Trials one sweep may run (POST /sweeps); past it, 422"
    )
    sweep_storage_url: str | None = Field(
        None,
        description="Where the sweeps' Optuna studies live; default beside the service's tables "
        "(PostgreSQL: the database's `optuna` schema; SQLite: <name>.optuna.db beside it)",
    )
    checkpoint_url_seconds: int = Field(
        300, description="Lifetime of a presigned checkpoint download URL"
    )
    sample_cache_size: int = 8
    max_samples_per_request: int = 256
    max_body_bytes: int = Field(1_048_576, description="Largest request body accepted, in bytes")
    # Stored datasets (POST /datasets): uploads stream to storage; workers cache packed files.
    max_dataset_bytes: int = Field(
        100 * 2**30, ge=1, description="Largest dataset upload (POST /datasets), in bytes"
    )
    dataset_part_bytes: int = Field(
        8 * 2**20,
        ge=5 * 2**20,
        description="Part size of a dataset upload's multipart upload to S3 (the API holds one)",
    )
    dataset_import_prefixes: Annotated[list[str], NoDecode] = Field(
        ["imports/"],
        description="Storage key prefixes of objects a user may register as a dataset "
        "(POST /datasets/register), a JSON list or comma-separated",
    )
    dataset_resolutions_max: int = Field(
        4, ge=1, description="Resolutions one dataset may be packed at"
    )
    dataset_cache_dir: Path | None = Field(
        None, description="A worker's cache of packed datasets; default <data_dir>/dataset-cache"
    )
    dataset_cache_bytes: int = Field(
        50 * 2**30,
        ge=0,
        description="Size cap of the worker's dataset cache; least recently used files go first",
    )

    # Limits on what one job may ask for (issue #10); defaults: sagan_core.config.Limits.
    max_batch_size: int = Field(
        Limits.batch_size, ge=1, le=MAX_INT, description="config.batch_size"
    )
    max_channels: int = Field(
        Limits.channels, ge=1, le=MAX_INT, description="config.g_ch and config.d_ch"
    )
    max_z_dim: int = Field(Limits.z_dim, ge=1, le=MAX_INT, description="config.z_dim")
    max_classes: int = Field(Limits.classes, ge=1, le=MAX_INT, description="config.num_classes")
    max_steps: int = Field(Limits.steps, ge=1, le=MAX_INT, description="config.steps")
    max_d_steps: int = Field(Limits.d_steps, ge=1, le=MAX_INT, description="config.d_steps")
    max_eval_samples: int = Field(
        Limits.eval_samples, ge=1, le=MAX_INT, description="config.eval_samples"
    )
    max_reference_samples: int = Field(
        Limits.reference_samples, ge=1, le=MAX_INT, description="config.eval_reference_samples"
    )
    max_sample_grids: int = Field(
        1_000, ge=1, le=MAX_INT, description="sample grids one job may store (config.sample_every)"
    )
    max_log_lines: int = Field(
        100_000, ge=1, le=MAX_INT, description="log lines of metrics one job may store"
    )
    max_nodes: int = Field(
        64, ge=1, le=MAX_INT, description="config.nodes under SAGAN_LAUNCHER=slurm (local: 1)"
    )
    # Who starts a train job's ranks (issue #25): `local`, this worker (one machine); `slurm`, one
    # allocation per job that the claiming worker submits, watches and cancels (worker.slurm).
    launcher: Literal["local", "slurm"] = Field(
        "local",
        description="local: a worker trains its jobs itself, on its machine; slurm: it submits "
        "each as one Slurm allocation (sbatch) of config.nodes nodes and watches it",
    )
    slurm_partition: str | None = Field(None, description="sbatch --partition (default: Slurm's)")
    slurm_time_limit: str | None = Field(
        None, description="sbatch --time of an allocation, e.g. 4:00:00 (default: the partition's)"
    )
    slurm_sbatch_args: str = Field(
        "", description="More sbatch flags, as a shell would split them (--account=x --qos=y)"
    )
    slurm_queue_wait_seconds: float = Field(
        3600.0,
        gt=0,
        description="An allocation still pending after this is cancelled and its job handed "
        "back to the queue (not counted as an attempt)",
    )
    slurm_poll_seconds: float = Field(5.0, gt=0, description="How often squeue is asked")
    slurm_run_root: Path | None = Field(
        None,
        description="Where allocations work (run directories, logs): a file system every node "
        "and the workers share. Default: SAGAN_DATA_DIR/runs",
    )
    slurm_python: str | None = Field(
        None,
        description="The Python on the nodes (with this project installed); default: "
        "the worker's own",
    )
    slurm_max_restarts: int = Field(
        1, ge=0, description="Gang restarts torchrun may make in one allocation (a lost node)"
    )
    slurm_signal_seconds: int = Field(
        120,
        ge=0,
        description="Seconds before the time limit when the run checkpoints and "
        "hands the job back (sbatch --signal); 0: off",
    )
    max_data_root_chars: int = Field(
        Limits.data_root_chars, ge=1, le=MAX_INT, description="Length of config.data_root"
    )
    data_roots: Annotated[list[Path] | None, NoDecode] = Field(
        None,
        description="Folders a job's data_root must lie in (symlinks resolved), a JSON list or "
        "comma-separated; a relative data_root is taken under the first; default "
        "[<data_dir>/datasets]; [] allows none",
    )

    @field_validator("data_roots", "gpu_pools", mode="before")
    @classmethod
    def _split_or_default(cls, value: object) -> object:
        """SAGAN_DATA_ROOTS, SAGAN_GPU_POOLS as a JSON list or comma-separated; empty: default."""
        if isinstance(value, str) and not value.strip():
            return None
        return _split_list(value)

    @field_validator("gpu_queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("dataset_import_prefixes", mode="before")
    @classmethod
    def _split_prefixes(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("gpu_pools")
    @classmethod
    def _positive_pools(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or min(value) < 1):
            raise ValueError("must list pool sizes >= 1, e.g. 1,8")
        return value

    @model_validator(mode="after")
    def _liveness_window(self) -> Settings:
        # A window shorter than two beats takes healthy jobs over (and fails them as "crashing
        # their worker" once SAGAN_MAX_ATTEMPTS takeovers pile up): refused at start.
        beat, stale = self.heartbeat_seconds, self.stale_after_seconds
        if not beat > 0:
            raise ValueError(f"SAGAN_HEARTBEAT_SECONDS must be above 0 (got {beat:g})")
        if not stale >= 2 * beat:
            raise ValueError(
                f"SAGAN_STALE_AFTER_SECONDS ({stale:g}) must be at least twice "
                f"SAGAN_HEARTBEAT_SECONDS ({beat:g}): a job whose worker missed one beat is "
                "still alive, and a shorter window takes healthy jobs from their workers"
            )
        if self.reap_every_seconds < 0:
            raise ValueError(
                f"SAGAN_REAP_EVERY_SECONDS must be 0 or more (got {self.reap_every_seconds:g})"
            )
        return self

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value  # compose passes an unset variable as ""

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'sagan.db').resolve()}"

    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.data_dir / "storage").resolve()

    def resolved_dataset_cache_dir(self) -> Path:
        return (self.dataset_cache_dir or self.data_dir / "dataset-cache").resolve()

    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    def is_embedded_broker(self) -> bool:
        return self.resolved_broker_url().startswith("filesystem://")

    def readiness_needs_worker(self) -> bool:
        if self.ready_requires_worker is not None:
            return self.ready_requires_worker
        return self.is_embedded_broker()

    def limits(self) -> Limits:
        """The operator's limits on a job's config, as the core checks them."""
        return Limits(
            batch_size=self.max_batch_size,
            channels=self.max_channels,
            z_dim=self.max_z_dim,
            classes=self.max_classes,
            steps=self.max_steps,
            d_steps=self.max_d_steps,
            eval_samples=self.max_eval_samples,
            reference_samples=self.max_reference_samples,
            data_root_chars=self.max_data_root_chars,
            sample_grids=self.max_sample_grids,
            log_lines=self.max_log_lines,
            gpus=max(self.pool_sizes()),
            nodes=self.max_nodes if self.launcher == "slurm" else 1,
        )

    def pool_sizes(self) -> list[int]:
        """GPUs per worker of each pool the deployment runs (SAGAN_GPU_POOLS)."""
        if self.gpu_pools is not None:
            return sorted(set(self.gpu_pools))
        return [self.worker_gpus or 1] if self.is_embedded_broker() else [1]

    def can_evaluate(self) -> bool:
        """Whether a worker can get the Inception weights: configured, in torch hub's cache on
        this machine, or downloadable (SAGAN_INCEPTION_DOWNLOAD)."""
        return bool(self.inception_weights or self.inception_download) or (
            hub_weights_path().is_file()
        )

    def queue_for(self, gpus: int = 1) -> str:
        """The Celery queue of jobs of `gpus` GPUs: train_queue for one, train_queue.gpusN."""
        return self.train_queue if gpus <= 1 else f"{self.train_queue}.gpus{gpus}"

    def has_gpus(self, gpus: int = 1) -> bool:
        """Whether the workers of jobs of `gpus` GPUs have GPUs (SAGAN_GPU_QUEUES)."""
        return self.queue_for(gpus) in (self.gpu_queues or [])

    def queues_served(self, worker_gpus: int) -> list[str]:
        """The queues a worker of `worker_gpus` GPUs consumes: jobs of 1..worker_gpus."""
        return [self.queue_for(n) for n in range(1, worker_gpus + 1)]

    def all_queues(self) -> list[str]:
        """Every queue a job of this deployment can be sent to (up to the largest pool)."""
        return self.queues_served(max(self.pool_sizes()))

    def resolved_data_roots(self) -> list[Path]:
        """Where a job's data_root may point (the first takes relative ones), symlinks resolved."""
        roots = self.data_roots if self.data_roots is not None else [self.data_dir / "datasets"]
        return [Path(r).resolve() for r in roots]

    def private_paths(self) -> list[Path]:
        """The service's own files: never a data_root, nor inside one, whatever the roots."""
        paths = [self.resolved_storage_dir(), self.broker_dir(), (self.data_dir / "runs").resolve()]
        url = self.resolved_database_url()
        if url.startswith("sqlite:///"):
            paths.append(Path(url.removeprefix("sqlite:///")).resolve())
        return paths


@lru_cache
def get_settings() -> Settings:
    return Settings()
