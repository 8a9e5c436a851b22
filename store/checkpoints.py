"""Checkpoint and model rows. The object is already in storage when these are written."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.jobs import ACTIVE
from store.models import Checkpoint, Job, Model, ModelAlias

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


def newest_checkpoint(session: Session, job_id: str) -> Checkpoint | None:
    """The job's registered checkpoint of the highest step: where a retried run resumes."""
    return (
        session.execute(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc())
        )
        .scalars()
        .first()
    )


def resume_checkpoint(session: Session, job: Job) -> Checkpoint | None:
    """Where a train job starts: its own newest checkpoint (a retried run), else, for a job
    continued from another, the checkpoint it was continued from (that job's newest if the step
    is gone); None: from scratch."""
    own = newest_checkpoint(session, job.id)
    if own is not None or not job.continued_from:
        return own
    if job.continued_from_step is not None:
        ckpt = session.execute(
            select(Checkpoint).where(
                Checkpoint.job_id == job.continued_from,
                Checkpoint.step == job.continued_from_step,
            )
        ).scalar_one_or_none()
        if ckpt is not None:
            return ckpt
    return newest_checkpoint(session, job.continued_from)


class ModelNotFound(LookupError):
    pass


def owned_model(session: Session, owner: str, model_id: str) -> Model:
    """The owner's model by id or `@alias` (store.aliases); someone else's is reported exactly
    like a missing one."""
    if model_id.startswith("@"):
        alias = session.get(ModelAlias, (owner, model_id[1:]))
        if alias is None:
            raise ModelNotFound(model_id)
        model_id = alias.model_id
    model = session.get(Model, model_id)
    if model is None or model.owner != owner:
        raise ModelNotFound(model_id)
    return model


def list_models(
    session: Session,
    owner: str,
    job_id: str | None = None,
    tag: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Model], int]:
    """A page of the owner's models, most recently updated first, and their count."""
    where = [Model.owner == owner]
    if job_id is not None:
        where.append(Model.job_id == job_id)
    if tag is not None:
        where.append(Model.tag == tag)
    total = session.execute(select(func.count()).select_from(Model).where(*where)).scalar_one()
    page = select(Model).where(*where).order_by(Model.updated_at.desc(), Model.id)
    return list(session.execute(page.limit(limit).offset(offset)).scalars()), total


def models_of_jobs(session: Session, job_ids: list[str]) -> dict[str, dict[str, Model]]:
    """Each job's models by tag (latest, best): one query for a page of jobs."""
    found: dict[str, dict[str, Model]] = {job_id: {} for job_id in job_ids}
    if job_ids:
        for m in session.execute(select(Model).where(Model.job_id.in_(job_ids))).scalars():
            found[m.job_id][m.tag] = m
    return found


def job_models(session: Session, job_id: str) -> dict[str, Model]:
    rows = session.execute(select(Model).where(Model.job_id == job_id)).scalars()
    return {m.tag: m for m in rows}


def prune_checkpoints(session: Session, job_id: str, keep: int) -> list[str]:
    """Drop the job's checkpoint rows beyond the newest `keep`; returns their storage keys.

    Never dropped: a checkpoint a model points at (latest, best) or one an active evaluation job
    was given. The caller deletes the returned objects after the commit (rows first: a row never
    points at a deleted object).
    """
    if keep < 1:
        return []
    ckpts = (
        session.execute(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc())
        )
        .scalars()
        .all()
    )
    pinned = set(
        session.execute(select(Model.checkpoint_id).where(Model.job_id == job_id)).scalars()
    )
    evaluating = {
        (config or {}).get("checkpoint_key")
        for config in session.execute(
            select(Job.config).where(Job.kind == "evaluate", Job.state.in_(ACTIVE))
        ).scalars()
    }
    dropped = []
    for ckpt in ckpts[keep:]:
        if ckpt.id in pinned or ckpt.key in evaluating:
            continue
        dropped.append(ckpt.key)
        session.delete(ckpt)
    session.flush()
    return dropped
