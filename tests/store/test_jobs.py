"""The job state machine on PostgreSQL and SQLite: guarded moves, idempotency, reaping."""

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store import jobs
from store.models import Job, JobEvent


def _new(session: Session, **kw) -> Job:
    job, created = jobs.create_job(
        session, owner=kw.pop("owner", "ann"), kind="train", config={}, total_steps=10, **kw
    )
    session.commit()
    return job


def test_only_one_worker_can_claim_a_queued_job(session: Session):
    job = _new(session)
    assert jobs.claim_job(session, job.id, "w1") is True
    assert jobs.claim_job(session, job.id, "w2") is False
    session.commit()
    session.refresh(job)
    assert (job.state, job.worker, job.attempts) == ("running", "w1", 1)


def test_cancel_queued_job_ends_it_at_once_and_running_job_goes_to_cancelling(session: Session):
    queued = _new(session)
    assert jobs.request_cancel(session, queued.id) == "cancelled"
    running = _new(session)
    jobs.claim_job(session, running.id, "w1")
    assert jobs.request_cancel(session, running.id) == "cancelling"
    assert jobs.heartbeat(session, running.id, "w1", step=3) == "cancelling"
    assert jobs.finish_job(session, running.id, "cancelled") is True
    with pytest.raises(jobs.InvalidTransition, match="only queued or running"):
        jobs.request_cancel(session, running.id)


def test_finished_job_cannot_be_finished_again(session: Session):
    job = _new(session)
    jobs.claim_job(session, job.id, "w1")
    assert jobs.finish_job(session, job.id, "failed", error="boom") is True
    assert jobs.finish_job(session, job.id, "succeeded") is False
    session.commit()
    session.refresh(job)
    assert (job.state, job.error) == ("failed", "boom")


def test_idempotency_key_returns_the_same_job_per_owner(session: Session):
    first = _new(session, idempotency_key="k1")
    again, created = jobs.create_job(
        session, owner="ann", kind="train", config={}, total_steps=1, idempotency_key="k1"
    )
    other = _new(session, owner="bob", idempotency_key="k1")
    assert (again.id, created) == (first.id, False)
    assert other.id != first.id


def test_stale_running_job_is_requeued_and_fresh_one_is_not(session: Session):
    stale, fresh = _new(session), _new(session)
    jobs.claim_job(session, stale.id, "dead")
    jobs.claim_job(session, fresh.id, "alive")
    session.execute(
        update(Job)
        .where(Job.id == stale.id)
        .values(heartbeat_at=jobs.utcnow() - timedelta(minutes=10))
    )
    session.commit()
    assert jobs.requeue_stale(session, timedelta(minutes=5)) == [stale.id]
    session.commit()
    session.refresh(stale)
    session.refresh(fresh)
    assert (stale.state, stale.worker) == ("queued", None)
    assert fresh.state == "running"
    # A requeued job is claimable again and counts the attempt.
    assert jobs.claim_job(session, stale.id, "w2")
    session.commit()
    session.refresh(stale)
    assert stale.attempts == 2


def test_every_transition_is_recorded_as_an_event(session: Session):
    job = _new(session)
    jobs.claim_job(session, job.id, "w1")
    jobs.finish_job(session, job.id, "succeeded")
    session.commit()
    moves = session.execute(
        select(JobEvent.from_state, JobEvent.to_state)
        .where(JobEvent.job_id == job.id)
        .order_by(JobEvent.id)
    ).all()
    assert [tuple(m) for m in moves] == [
        (None, "queued"),
        ("queued", "running"),
        ("running", "succeeded"),
    ]


def test_unknown_job_raises_not_found(session: Session):
    with pytest.raises(jobs.JobNotFound):
        jobs.claim_job(session, "nope", "w1")
