"""Tables: jobs, their events and metrics, checkpoints, models (trained generators), datasets,
sweeps."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from store.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_owner_state_created", "owner", "state", "created_at"),
        UniqueConstraint("sweep_id", "trial_number", name="uq_jobs_sweep_trial"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(128), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # train | evaluate
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    model_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # evaluated model
    # A train job continued from another job's checkpoint: that job and the checkpoint's step.
    continued_from: Mapped[str | None] = mapped_column(String(32), nullable=True)
    continued_from_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # A trial of a sweep: the sweep and the trial's number in its Optuna study.
    sweep_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("sweeps.id", name="fk_jobs_sweep_id"), nullable=True, index=True
    )
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # What the service chose for fields the job left out, and why ("preset tiny: CPU workers,
    # 1,200 images at 32 px; ..."); None when the caller chose everything.
    defaults_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The latest "not learning" warning of the run (sagan_core.collapse), also a job event.
    warning: Mapped[str | None] = mapped_column(Text, nullable=True)
    step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    images_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Bumped by every metrics write: readers key cached, downsampled series by it.
    metrics_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Sweep(Base):
    """A hyperparameter search (sweeps/): its checked spec, its state, the best trial so far.
    Its trials are train jobs (jobs.sweep_id); its Optuna study lives in Optuna's own tables
    (sweeps.study). `lease_until` and `pokes` let one process at a time advance it."""

    __tablename__ = "sweeps"
    __table_args__ = (Index("ix_sweeps_owner_created", "owner", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(128), nullable=False)
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="running")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    trials: Mapped[int] = mapped_column(Integer, nullable=False)
    parallel: Mapped[int] = mapped_column(Integer, nullable=False)
    metric: Mapped[str] = mapped_column(String(64), nullable=False)
    direction: Mapped[str] = mapped_column(String(8), nullable=False)
    promote: Mapped[str | None] = mapped_column(String(64), nullable=True)
    best_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    best_trial: Mapped[int | None] = mapped_column(Integer, nullable=True)
    best_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it waits, if it does
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    pokes: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)  # state | checkpoint | info
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("job_id", "name", "step", name="uq_metrics_job_name_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScoreProtocol(Base):
    """How the IS/FID/KID a job wrote at `step` were measured (sagan_core.evaluate.protocol):
    feature extractor and its weights' hash, generated count, reference data and its hash,
    resolution and resizer, truncation, generator, seed."""

    __tablename__ = "score_protocols"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_score_protocols_job_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    protocol: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_checkpoints_job_step"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    key: Mapped[str] = mapped_column(String(512), nullable=False)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Model(Base):
    """A trained generator a user can sample: one row per (job, tag), moved to newer checkpoints."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("job_id", "tag", name="uq_models_job_tag"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    owner: Mapped[str] = mapped_column(String(128), nullable=False)
    tag: Mapped[str] = mapped_column(String(16), nullable=False)  # latest | best
    checkpoint_id: Mapped[str] = mapped_column(String(32), ForeignKey("checkpoints.id"))
    checkpoint_key: Mapped[str] = mapped_column(String(512), nullable=False)
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    resolution: Mapped[int] = mapped_column(Integer, nullable=False)
    num_classes: Mapped[int] = mapped_column(Integer, nullable=False)
    class_names: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class ModelAlias(Base):
    """A user's name for one of their models (MLflow's and W&B's registry aliases): every model
    route takes `@alias` where it takes an id."""

    __tablename__ = "model_aliases"

    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("models.id", ondelete="CASCADE"), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Worker(Base):
    """A live worker process: it beats its row while it runs and removes it when it stops."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # host:pid
    queue: Mapped[str] = mapped_column(String(128), nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class ApiToken(Base):
    """An API token: only its SHA-256 is kept; the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user: Mapped[str] = mapped_column(String(128), nullable=False)
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)  # shown in listings
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Dataset(Base):
    """A stored dataset: an uploaded source (archive or packed file) and its packed files.

    uploading -> packing -> ready | failed. `packed` maps a resolution ("64") to its packed file:
    {"key", "size", "sha256"}; workers cache a packed file by its sha256.
    """

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_datasets_owner_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="uploading")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it failed
    source_format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    source_key: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)  # the source
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # its SHA-256
    resolutions: Mapped[list[int]] = mapped_column(JSON, nullable=False, default=list)
    class_names: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    class_counts: Mapped[list[int]] = mapped_column(JSON, nullable=False, default=list)
    image_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    packed: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    pack_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
