"""The polled job reads (#24), one statement each: a job with its models, a page of jobs with
their count and models, on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from store import jobs
from store.checkpoints import checkpoint_key, register_checkpoint
from store.job_reads import job_with_models, page_of_jobs


def _job(session: Session, owner: str, tags_by_step: dict[int, set[str]] | None = None):
    job, _ = jobs.create_job(session, owner=owner, kind="train", config={}, total_steps=10)
    for step, tags in (tags_by_step or {}).items():
        register_checkpoint(
            session, job, step=step, key=checkpoint_key(job.id, step), size_bytes=step,
            tags=tags, resolution=32, class_names=[str(i) for i in range(10)],
        )  # fmt: skip
    session.commit()
    return job


def _statements(session: Session) -> list[str]:
    seen: list[str] = []
    event.listen(session.get_bind(), "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_a_job_comes_with_its_models_in_one_statement_and_another_owners_is_not_found(session):
    trained = _job(session, "ann", {1: {"latest", "best"}, 2: {"latest"}})
    bare = _job(session, "ann")
    theirs = _job(session, "bob", {1: {"latest"}})
    seen = _statements(session)

    job, models = job_with_models(session, "ann", trained.id)
    assert len(seen) == 1
    assert job.id == trained.id and (models["latest"].step, models["best"].step) == (2, 1)
    assert job_with_models(session, "ann", bare.id)[1] == {}
    for owner, job_id in (("ann", theirs.id), ("ann", "0" * 32)):
        with pytest.raises(jobs.JobNotFound):
            job_with_models(session, owner, job_id)


def test_a_page_carries_its_count_and_its_jobs_models_newest_first(session):
    ids = [_job(session, "ann", {1: {"latest"}} if i % 2 else None).id for i in range(5)]
    _job(session, "bob", {1: {"latest", "best"}})
    jobs.request_cancel(session, ids[0])
    session.commit()
    seen = _statements(session)

    page, total = page_of_jobs(session, "ann", limit=2, offset=1)
    assert len(seen) == 1 and total == 5
    assert [job.id for job, _ in page] == [ids[3], ids[2]]
    assert [sorted(models) for _, models in page] == [["latest"], []]

    everyone, total = page_of_jobs(session, None, limit=50)
    assert total == 6 and len(everyone) == 6  # one row per job, whatever its models
    cancelled, total = page_of_jobs(session, "ann", state="cancelled")
    assert ([job.id for job, _ in cancelled], total) == ([ids[0]], 1)
    assert page_of_jobs(session, "ann", state="pruned") == ([], 0)
    assert page_of_jobs(session, "ann", kind="evaluate") == ([], 0)
    # Past the end no row carries the count: it is counted on its own.
    assert page_of_jobs(session, "ann", limit=2, offset=9) == ([], 5)
