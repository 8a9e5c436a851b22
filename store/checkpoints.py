"""Checkpoint and model rows. The object is already in storage when these are written."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import Checkpoint, Job, Model

MODEL_TAGS = ("latest", "best")


def checkpoint_key(job_id: str, step: int) -> str:
    return f"jobs/{job_id}/checkpoints/step-{step:08d}.pt"


def register_checkpoint(
    session: Session,
    job: Job,
    *,
    step: int,
    key: str,
    size_bytes: int,
    tags: Iterable[str],
    resolution: int,
    class_names: list[str],
) -> tuple[Checkpoint, list[Model]]:
    """Record a stored checkpoint and point the job's latest/best models at it."""
    ckpt = session.execute(
        select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.step == step)
    ).scalar_one_or_none()
    if ckpt is None:
        ckpt = Checkpoint(job_id=job.id, step=step, key=key, size_bytes=size_bytes)
        session.add(ckpt)
    else:  # a resumed run wrote the same step again
        ckpt.key, ckpt.size_bytes = key, size_bytes
    session.flush()
    models = []
    for tag in sorted(set(tags) & set(MODEL_TAGS)):
        model = session.execute(
            select(Model).where(Model.job_id == job.id, Model.tag == tag)
        ).scalar_one_or_none()
        if model is None:
            model = Model(job_id=job.id, owner=job.owner, tag=tag)
            session.add(model)
        model.checkpoint_id = ckpt.id
        model.checkpoint_key = key
        model.step = step
        model.resolution = resolution
        model.num_classes = len(class_names)
        model.class_names = list(class_names)
        models.append(model)
    session.flush()
    return ckpt, models


def latest_checkpoint(session: Session, job_id: str) -> Checkpoint | None:
    return (
        session.execute(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc())
        )
        .scalars()
        .first()
    )


def job_models(session: Session, job_id: str) -> dict[str, Model]:
    rows = session.execute(select(Model).where(Model.job_id == job_id)).scalars()
    return {m.tag: m for m in rows}
