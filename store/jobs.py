"""The job state machine: the one place that writes jobs.state, each move a guarded UPDATE.

queued -> running -> succeeded | failed | cancelled
queued -> cancelled
queued -> failed (fail_unqueued: the broker refused the task, so no worker will ever see it)
running -> cancelling -> cancelled (or succeeded/failed if the run ends first)
running -> queued (requeue_stale: the worker died; release_job: it shut down; the retry resumes)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.models import Job, JobEvent, utcnow

QUEUED, RUNNING, CANCELLING = "queued", "running", "cancelling"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, CANCELLING, SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING, CANCELLING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
KINDS = ("train", "evaluate")


class JobNotFound(LookupError):
    pass


class InvalidTransition(RuntimeError):
    pass


def _event(session: Session, job_id: str, frm: str | None, to: str, message: str | None) -> None:
    session.add(JobEvent(job_id=job_id, kind="state", from_state=frm, to_state=to, message=message))


def add_event(session: Session, job_id: str, kind: str, message: str) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, message=message))


def _move(
    session: Session,
    job_id: str,
    from_states: tuple[str, ...],
    to: str,
    message: str | None = None,
    owner_worker: str | None = None,
    **values: Any,
) -> str | None:
    """Move the job to `to` if it is in one of `from_states`; returns the state it left, or None.

    With `owner_worker`, only while that worker owns the job (a worker that lost it to the reaper
    must not finish the retry that another worker now runs).
    """
    row = session.execute(select(Job.state, Job.worker).where(Job.id == job_id)).one_or_none()
    if row is None:
        raise JobNotFound(job_id)
    current, worker = row
    if current not in from_states or (owner_worker is not None and worker != owner_worker):
        return None
    guard = [Job.id == job_id, Job.state == current]
    if owner_worker is not None:
        guard.append(Job.worker == owner_worker)
    result = session.execute(
        update(Job)
        .where(*guard)
        .values(state=to, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None  # someone else moved it between our read and write
    _event(session, job_id, current, to, message)
    return current


def create_job(
    session: Session,
    *,
    owner: str,
    kind: str,
    config: dict[str, Any],
    total_steps: int,
    model_id: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Insert a queued job; with an idempotency key already used by this owner, return that job.

    Returns (job, created).
    """
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    if idempotency_key:
        existing = find_by_idempotency_key(session, owner, idempotency_key)
        if existing is not None:
            return existing, False
    job = Job(
        owner=owner,
        kind=kind,
        config=config,
        total_steps=total_steps,
        model_id=model_id,
        idempotency_key=idempotency_key,
        state=QUEUED,
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:
        # A concurrent POST with the same key won the race.
        session.rollback()
        existing = find_by_idempotency_key(session, owner, idempotency_key or "")
        if existing is None:
            raise
        return existing, False
    _event(session, job.id, None, QUEUED, f"{kind} job created")
    return job, True


def find_by_idempotency_key(session: Session, owner: str, key: str) -> Job | None:
    return session.execute(
        select(Job).where(Job.owner == owner, Job.idempotency_key == key)
    ).scalar_one_or_none()


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def claim_job(session: Session, job_id: str, worker: str) -> bool:
    """queued -> running for this worker; False if another delivery already owns the job."""
    now = utcnow()
    left = _move(
        session,
        job_id,
        (QUEUED,),
        RUNNING,
        f"claimed by {worker}",
        worker=worker,
        heartbeat_at=now,
        started_at=now,
        attempts=Job.attempts + 1,
        error=None,
    )
    return left is not None


def heartbeat(
    session: Session,
    job_id: str,
    worker: str,
    *,
    step: int | None = None,
    images_per_s: float | None = None,
) -> str | None:
    """Record liveness and progress; returns the job's state (the worker reads cancels from it)."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if step is not None:
        values["step"] = step
    if images_per_s is not None:
        values["images_per_s"] = images_per_s
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.state.in_((RUNNING, CANCELLING)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return session.execute(select(Job.state).where(Job.id == job_id)).scalar_one_or_none()


def request_cancel(session: Session, job_id: str) -> str:
    """Cancel a queued job at once, or ask a running one to stop; returns the new state."""
    if _move(session, job_id, (QUEUED,), CANCELLED, "cancelled before start", finished_at=utcnow()):
        return CANCELLED
    if _move(session, job_id, (RUNNING,), CANCELLING, "cancel requested"):
        return CANCELLING
    state = get_job(session, job_id).state
    if state == CANCELLING:
        return state
    raise InvalidTransition(
        f"job {job_id} is {state}; only queued or running jobs can be cancelled"
    )


def fail_unqueued(session: Session, job_id: str, error: str) -> bool:
    """queued -> failed, for a job whose task could not be sent to the broker."""
    return (
        _move(session, job_id, (QUEUED,), FAILED, error, error=error, finished_at=utcnow())
        is not None
    )


def finish_job(
    session: Session,
    job_id: str,
    state: str,
    error: str | None = None,
    worker: str | None = None,
) -> bool:
    """running|cancelling -> succeeded|failed|cancelled (with `worker`: only if it owns the job)."""
    if state not in TERMINAL:
        raise ValueError(f"not a terminal state: {state}")
    return (
        _move(
            session,
            job_id,
            (RUNNING, CANCELLING),
            state,
            error,
            owner_worker=worker,
            error=error,
            finished_at=utcnow(),
        )
        is not None
    )


def release_job(session: Session, job_id: str, worker: str) -> str | None:
    """The owning worker is shutting down: running -> queued for a retry, cancelling -> cancelled.

    Returns the new state, or None if this worker no longer owns the job.
    """
    if _move(
        session,
        job_id,
        (RUNNING,),
        QUEUED,
        "worker shut down; requeued",
        owner_worker=worker,
        worker=None,
    ):
        return QUEUED
    if _move(
        session,
        job_id,
        (CANCELLING,),
        CANCELLED,
        "cancelled while the worker shut down",
        owner_worker=worker,
        finished_at=utcnow(),
    ):
        return CANCELLED
    return None


def requeue_stale(
    session: Session, older_than: timedelta, now: datetime | None = None
) -> list[str]:
    """Put jobs whose worker stopped heartbeating back in the queue; returns their ids.

    A job that was being cancelled when its worker died ends cancelled instead.
    """
    cutoff = (now or utcnow()) - older_than
    stale = session.execute(
        select(Job.id, Job.state).where(
            Job.state.in_((RUNNING, CANCELLING)), Job.heartbeat_at < cutoff
        )
    ).all()
    requeued = []
    for job_id, state in stale:
        if state == CANCELLING:
            _move(session, job_id, (CANCELLING,), CANCELLED, "worker lost while cancelling")
        elif _move(session, job_id, (RUNNING,), QUEUED, "worker lost; requeued", worker=None):
            requeued.append(job_id)
    return requeued
