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
    with pytest.raises(jobs.InvalidTransition, match="only queued, running or paused"):
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


def _silence(session: Session, job_id: str, minutes: float = 10) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(heartbeat_at=jobs.utcnow() - timedelta(minutes=minutes))
    )
    session.commit()


def _row(session: Session, job_id: str) -> Job:
    session.expire_all()
    return session.get(Job, job_id)


def test_a_claim_takes_over_a_job_whose_worker_went_silent_but_not_a_live_one(session: Session):
    job = _new(session)
    assert jobs.claim_job(session, job.id, "w1")
    first_start = _row(session, job.id).started_at
    window = dict(stale_after=timedelta(minutes=1), max_attempts=3)
    assert jobs.claim_job(session, job.id, "w2", **window) is False  # w1 is alive
    _silence(session, job.id)
    assert jobs.claim_job(session, job.id, "w2", **window) is True
    session.commit()
    row = _row(session, job.id)
    assert (row.state, row.worker, row.attempts) == ("running", "w2", 2)
    assert row.started_at == first_start  # the first start, not the latest
    assert jobs.losses(session, job.id) == 1
    assert jobs.heartbeat(session, job.id, "w1", step=5) == "running"  # w1 writes nothing now
    assert _row(session, job.id).step == 0


def test_a_job_whose_worker_is_lost_max_attempts_times_fails_with_the_reason(session: Session):
    job = _new(session)
    for attempt in range(1, 4):
        assert jobs.claim_job(session, job.id, f"w{attempt}")
        _silence(session, job.id)
        requeued = jobs.requeue_stale(session, timedelta(minutes=1), max_attempts=3)
        session.commit()
        assert requeued == ([job.id] if attempt < 3 else [])
    row = _row(session, job.id)
    assert (row.state, row.attempts) == ("failed", 3)
    assert "worker lost 3 times (SAGAN_MAX_ATTEMPTS=3)" in row.error
    assert "last step 0, no checkpoint" in row.error
    assert jobs.claim_job(session, job.id, "w9") is False


def test_a_supervisor_requeues_the_jobs_of_a_worker_it_saw_die(session: Session):
    mine, other = _new(session), _new(session)
    jobs.claim_job(session, mine.id, "host:1")
    jobs.claim_job(session, other.id, "host:2")
    assert jobs.requeue_jobs_of(session, "host:1", "exited with -9", max_attempts=3) == [mine.id]
    session.commit()
    assert (_row(session, mine.id).state, _row(session, other.id).state) == ("queued", "running")


def test_release_is_not_a_loss_and_unclaimed_queued_jobs_are_listed_for_resending(
    session: Session,
):
    job = _new(session)
    jobs.claim_job(session, job.id, "w1")
    assert jobs.release_job(session, job.id, "w1", "database unavailable") == "queued"
    session.commit()
    assert jobs.losses(session, job.id) == 0
    assert jobs.unclaimed_queued(session, timedelta(minutes=1)) == []  # queued just now
    session.execute(
        update(Job).where(Job.id == job.id).values(updated_at=jobs.utcnow() - timedelta(minutes=5))
    )
    session.commit()
    assert jobs.unclaimed_queued(session, timedelta(minutes=1)) == [(job.id, "train")]


def test_two_workers_racing_for_one_job_on_postgres_one_wins(migrated_postgres_url: str):
    """The guarded UPDATE under real concurrency: two threads, two connections, one barrier."""
    import threading

    from store.db import make_engine

    engine = make_engine(migrated_postgres_url)
    try:
        for _ in range(20):
            with Session(engine) as s:
                job_id = _new(s).id
                s.commit()
            barrier = threading.Barrier(2)
            won: dict[str, bool] = {}

            def claim(worker: str, job_id: str = job_id, barrier=barrier, won=won) -> None:  # noqa: ANN001
                with Session(engine) as s:
                    s.execute(select(Job.id).where(Job.id == job_id)).all()  # connection up first
                    barrier.wait()
                    won[worker] = jobs.claim_job(s, job_id, worker)
                    s.commit()

            threads = [threading.Thread(target=claim, args=(w,)) for w in ("w1", "w2")]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(won.values()) == [False, True], won
            with Session(engine) as s:
                job = jobs.get_job(s, job_id)
                assert (job.state, job.attempts) == ("running", 1)
                assert job.worker == next(w for w, ok in won.items() if ok)
    finally:
        engine.dispose()


def test_a_warning_event_is_the_jobs_badge_and_the_defaults_note_an_event(session: Session):
    job = _new(session, defaults_note="preset tiny: CPU workers")
    jobs.add_event(session, job.id, "info", "a plain note")
    assert session.get(Job, job.id).warning is None
    jobs.add_event(session, job.id, jobs.WARNING, "not learning: class 3 ...")
    jobs.add_event(session, job.id, jobs.WARNING, "not learning: class 5 ...")
    session.commit()
    session.expire_all()
    assert session.get(Job, job.id).warning == "not learning: class 5 ..."  # the latest
    events = session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)).all()
    assert [(e.kind, e.message) for e in events if e.kind != "state"] == [
        ("info", "preset tiny: CPU workers"),
        ("info", "a plain note"),
        ("warning", "not learning: class 3 ..."),
        ("warning", "not learning: class 5 ..."),
    ]
