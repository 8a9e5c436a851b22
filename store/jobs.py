"""The job state machine: the one place that writes jobs.state, each move a guarded UPDATE.

queued -> running -> succeeded | failed | cancelled | pruned
queued -> cancelled
running -> cancelling -> cancelled (or succeeded/failed if the run ends first)
running -> queued (release_job: the worker shut down or lost its database; the retry resumes)
running -> queued | failed (lose_worker: the worker stopped heartbeating; failed once it has been
                            lost max_attempts times, so a job that kills its worker stops)
cancelling -> cancelled (lose_worker while cancelling)
running -> pruned (a sweep's trial its pruner stopped early: it ended well, at a checkpoint, and
                   lost to the others; sweeps/)
running -> paused -> queued | pruned | cancelled (a sweep's trial waits at a rung of synchronous
                   halving, at a checkpoint, holding no worker; the sweep's driver moves it on)

A job stays queued until a worker claims it: the database is the outbox, and a broker message is
only a wake-up call (unclaimed_queued lists the jobs to send again).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.models import Checkpoint, Job, JobEvent, utcnow

QUEUED, RUNNING, CANCELLING = "queued", "running", "cancelling"
SUCCEEDED, FAILED, CANCELLED, PRUNED = "succeeded", "failed", "cancelled", "pruned"
PAUSED = "paused"  # neither active (no worker, no quota) nor ended
STATES = (QUEUED, RUNNING, CANCELLING, PAUSED, SUCCEEDED, FAILED, CANCELLED, PRUNED)
ACTIVE = (QUEUED, RUNNING, CANCELLING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED, PRUNED)
KINDS = ("train", "evaluate", "pack")  # pack: a stored dataset made ready (worker)
WARNING = "warning"  # the event kind of a "not learning" warning (sagan_core.collapse)
WORKER_LOST = "worker_lost"  # the event kind of each loss; their count is the retry budget spent


class JobNotFound(LookupError):
    pass


class InvalidTransition(RuntimeError):
    pass


class QuotaExceeded(RuntimeError):
    """The owner already has as many active (queued + running) jobs as allowed."""


def _event(session: Session, job_id: str, frm: str | None, to: str, message: str | None) -> None:
    session.add(JobEvent(job_id=job_id, kind="state", from_state=frm, to_state=to, message=message))


def add_event(session: Session, job_id: str, kind: str, message: str) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, message=message))
    if kind == WARNING:  # the job's badge: its latest warning
        session.execute(update(Job).where(Job.id == job_id).values(warning=message))


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


def check_quota(
    session: Session, owner: str, max_active: int, then: str = "wait for one to end or cancel one"
) -> None:
    """QuotaExceeded when the owner already has `max_active` queued or running jobs."""
    active = session.execute(
        select(func.count()).select_from(Job).where(Job.owner == owner, Job.state.in_(ACTIVE))
    ).scalar_one()
    if active >= max_active:
        raise QuotaExceeded(
            f"{owner} has {active} active jobs (queued or running), the limit is "
            f"{max_active} (SAGAN_MAX_ACTIVE_JOBS); {then}"
        )


def create_job(
    session: Session,
    *,
    owner: str,
    kind: str,
    config: dict[str, Any],
    total_steps: int,
    model_id: str | None = None,
    idempotency_key: str | None = None,
    max_active: int | None = None,
    defaults_note: str | None = None,
    sweep_id: str | None = None,
    trial_number: int | None = None,
) -> tuple[Job, bool]:
    """Insert a queued job; with an idempotency key already used by this owner, return that job.

    With `max_active`, an owner who already has that many active jobs gets QuotaExceeded (a
    replay of an existing job is still answered). Returns (job, created).
    """
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)} (got {kind!r})")
    if idempotency_key:
        existing = find_by_idempotency_key(session, owner, idempotency_key)
        if existing is not None:
            return existing, False
    if max_active is not None:
        check_quota(session, owner, max_active)
    job = Job(
        owner=owner,
        kind=kind,
        config=config,
        total_steps=total_steps,
        model_id=model_id,
        idempotency_key=idempotency_key,
        defaults_note=defaults_note,
        sweep_id=sweep_id,
        trial_number=trial_number,
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
    made = f"trial {trial_number} of sweep {sweep_id}" if sweep_id else f"{kind} job"
    _event(session, job.id, None, QUEUED, f"{made} created")
    if defaults_note:
        add_event(session, job.id, "info", defaults_note)
    return job, True


def find_by_idempotency_key(session: Session, owner: str, key: str) -> Job | None:
    return session.execute(
        select(Job).where(Job.owner == owner, Job.idempotency_key == key)
    ).scalar_one_or_none()


def owned_job(session: Session, owner: str, job_id: str) -> Job:
    """The owner's job; someone else's is reported exactly like a missing one (JobNotFound)."""
    job = session.get(Job, job_id)
    if job is None or job.owner != owner:
        raise JobNotFound(job_id)
    return job


def job_events(
    session: Session, job_id: str, after: int | None = None, limit: int = 200
) -> list[JobEvent]:
    """A job's events, oldest first, those with an id above `after` (the last one seen)."""
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.id > after)
    return list(session.execute(query.order_by(JobEvent.id).limit(limit)).scalars())


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def claim_job(
    session: Session,
    job_id: str,
    worker: str,
    *,
    stale_after: timedelta | None = None,
    max_attempts: int | None = None,
    owner_dead: Callable[[str], bool] | None = None,
) -> bool:
    """queued -> running for this worker; False if another live worker owns the job or it ended.

    With `stale_after`, a running job whose owner has not heartbeated for that long is taken over
    (its loss counts against `max_attempts`), so a redelivered task recovers it at once; so is one
    whose owner `owner_dead(owner)` says is gone (a prefork child of this machine that died: its
    heartbeat is still fresh, and the redelivery must not wait out the stale window).
    """
    row = session.execute(
        select(Job.state, Job.worker, Job.heartbeat_at).where(Job.id == job_id)
    ).one_or_none()
    if row is None:
        raise JobNotFound(job_id)
    state, owner, beat = row
    if state in (RUNNING, CANCELLING) and stale_after is not None and _stale(beat, stale_after):
        lose_worker(
            session,
            job_id,
            owner,
            f"no heartbeat from {owner} since {_when(beat)}; taken over by {worker}",
            max_attempts,
        )
    elif state in (RUNNING, CANCELLING) and owner and owner_dead is not None and owner_dead(owner):
        lose_worker(session, job_id, owner, f"{owner} died; taken over by {worker}", max_attempts)
    now = utcnow()
    left = _move(
        session,
        job_id,
        (QUEUED,),
        RUNNING,
        f"claimed by {worker}",
        worker=worker,
        heartbeat_at=now,
        started_at=func.coalesce(Job.started_at, now),  # the first start; attempts say how many
        attempts=Job.attempts + 1,
        error=None,
    )
    return left is not None


def _stale(beat: datetime | None, older_than: timedelta) -> bool:
    if beat is None:
        return True
    if beat.tzinfo is None:  # SQLite returns naive datetimes (stored as UTC)
        beat = beat.replace(tzinfo=utcnow().tzinfo)
    return beat < utcnow() - older_than


def _when(beat: datetime | None) -> str:
    return beat.strftime("%Y-%m-%d %H:%M:%S UTC") if beat else "its claim"


def losses(session: Session, job_id: str) -> int:
    """How many times the job's worker was lost (crashed, killed, cut off) while running it."""
    return session.execute(
        select(func.count())
        .select_from(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.kind == WORKER_LOST)
    ).scalar_one()


def lose_worker(
    session: Session, job_id: str, worker: str | None, reason: str, max_attempts: int | None
) -> str | None:
    """The job's worker is gone: back to the queue (it resumes from its last checkpoint), or
    failed once its worker has been lost `max_attempts` times; a cancelling job ends cancelled.

    Only while `worker` still owns the job. Returns the new state, or None if nothing moved.
    """
    row = session.execute(
        select(Job.state, Job.worker, Job.step).where(Job.id == job_id)
    ).one_or_none()
    if row is None:
        raise JobNotFound(job_id)
    state, owner, step = row
    if state not in (RUNNING, CANCELLING) or owner != worker:
        return None
    lost = losses(session, job_id) + 1
    if state == CANCELLING:
        to, values = CANCELLED, {"finished_at": utcnow()}
        message = f"worker lost while cancelling: {reason}"
    elif max_attempts is not None and lost >= max_attempts:
        last = session.execute(
            select(func.max(Checkpoint.step)).where(Checkpoint.job_id == job_id)
        ).scalar_one()
        kept = f"last checkpoint step {last}" if last is not None else "no checkpoint"
        message = (
            f"worker lost {lost} times (SAGAN_MAX_ATTEMPTS={max_attempts}); the job may be "
            f"crashing its worker (out of memory?); last step {step}, {kept}. Last: {reason}"
        )
        to, values = FAILED, {"finished_at": utcnow(), "error": message}
    else:
        to, values = QUEUED, {"worker": None}
        message = f"worker lost ({lost} of {max_attempts or 'unlimited'}): {reason}; requeued"
    if _move(session, job_id, (state,), to, message, owner_worker=worker, **values) is None:
        return None
    add_event(session, job_id, WORKER_LOST, reason)
    return to


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


def job_status(session: Session, job_id: str) -> tuple[str, str | None] | None:
    """(state, owning worker) of a job, or None if it does not exist."""
    row = session.execute(select(Job.state, Job.worker).where(Job.id == job_id)).one_or_none()
    return (row[0], row[1]) if row is not None else None


def request_cancel(session: Session, job_id: str) -> str:
    """Cancel a queued or paused job at once, or ask a running one to stop; the new state."""
    if _move(
        session, job_id, (QUEUED, PAUSED), CANCELLED, "cancelled before start", finished_at=utcnow()
    ):
        return CANCELLED
    if _move(session, job_id, (RUNNING,), CANCELLING, "cancel requested"):
        return CANCELLING
    state = get_job(session, job_id).state
    if state == CANCELLING:
        return state
    raise InvalidTransition(
        f"job {job_id} is {state}; only queued, running or paused jobs can be cancelled"
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


def release_job(
    session: Session, job_id: str, worker: str, reason: str = "worker shut down"
) -> str | None:
    """The owning worker stops the run in order (shutdown, lost database): running -> queued for a
    retry that resumes from the last checkpoint, cancelling -> cancelled. Not a loss.

    Returns the new state, or None if this worker no longer owns the job.
    """
    if _move(
        session,
        job_id,
        (RUNNING,),
        QUEUED,
        f"{reason}; requeued",
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


def pause_job(session: Session, job_id: str, worker: str, reason: str) -> str | None:
    """The owning worker stopped a sweep's trial at a rung: running -> paused (error says why),
    cancelling -> cancelled. Returns the new state, or None if the worker no longer owns it."""
    if _move(session, job_id, (RUNNING,), PAUSED, reason, worker, worker=None, error=reason):
        return PAUSED
    if _move(session, job_id, (CANCELLING,), CANCELLED, "cancelled", worker, finished_at=utcnow()):
        return CANCELLED
    return None


def move_paused(session: Session, job_id: str, to: str, reason: str) -> bool:
    """The sweep's driver decided the rung: paused -> queued (goes on) or pruned (ended)."""
    ended = {"finished_at": utcnow(), "error": reason} if to == PRUNED else {"error": None}
    return _move(session, job_id, (PAUSED,), to, reason, **ended) is not None


def requeue_stale(
    session: Session,
    older_than: timedelta,
    now: datetime | None = None,
    max_attempts: int | None = None,
) -> list[str]:
    """Jobs whose worker stopped heartbeating lose it (lose_worker); returns the requeued ids."""
    cutoff = (now or utcnow()) - older_than
    stale = session.execute(
        select(Job.id, Job.worker, Job.heartbeat_at).where(
            Job.state.in_((RUNNING, CANCELLING)), Job.heartbeat_at < cutoff
        )
    ).all()
    reason = "no heartbeat from {} since {}"
    return [
        job_id
        for job_id, worker, beat in stale
        if lose_worker(session, job_id, worker, reason.format(worker, _when(beat)), max_attempts)
        == QUEUED
    ]


def requeue_jobs_of(
    session: Session, worker: str, reason: str, max_attempts: int | None = None
) -> list[str]:
    """The jobs of a worker known to be dead (its supervisor saw it exit) lose it now, without
    waiting for their heartbeats to go stale; returns the requeued ids."""
    owned = session.execute(
        select(Job.id).where(Job.worker == worker, Job.state.in_((RUNNING, CANCELLING)))
    ).scalars()
    return [
        j for j in list(owned) if lose_worker(session, j, worker, reason, max_attempts) == QUEUED
    ]


def unclaimed_queued(
    session: Session, older_than: timedelta, limit: int = 500
) -> list[tuple[str, str]]:
    """(id, kind) of jobs queued for longer than `older_than`: their message may have been lost."""
    cutoff = utcnow() - older_than
    return [
        (job_id, kind)
        for job_id, kind in session.execute(
            select(Job.id, Job.kind)
            .where(Job.state == QUEUED, Job.updated_at < cutoff)
            .order_by(Job.created_at)
            .limit(limit)
        )
    ]
