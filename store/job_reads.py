"""The job reads a dashboard polls, each in one statement: a job with its models, and a page of
jobs with their count and their models.

Issue #24: under 20 metric readers on two cores, every round trip to PostgreSQL waits for a busy
CPU twice (the server's backend, then the API's thread), and the routes' tails grew with their
round trips. `GET /jobs` made six (pre-ping, BEGIN, count, page, models, ROLLBACK), `GET
/jobs/<id>` five; on a read session (store.db.read_sessionmaker_for) with these they make two.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.jobs import JobNotFound
from store.models import Job, Model

JobModels = tuple[Job, dict[str, Model]]  # a job and its models by tag (latest, best)


def job_with_models(session: Session, owner: str, job_id: str) -> JobModels:
    """The owner's job and its models; someone else's is reported like a missing one."""
    query = select(Job, Model).outerjoin(Model, Model.job_id == Job.id).where(Job.id == job_id)
    rows = session.execute(query).all()
    if not rows or rows[0][0].owner != owner:
        raise JobNotFound(job_id)
    return rows[0][0], {m.tag: m for _, m in rows if m is not None}


def page_of_jobs(
    session: Session,
    owner: str | None,
    state: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[JobModels], int]:
    """A page of the owner's jobs (everyone's with owner None), newest first, with their models,
    and the count of all the jobs that match."""
    where = [] if owner is None else [Job.owner == owner]
    if state is not None:
        where.append(Job.state == state)
    if kind is not None:
        where.append(Job.kind == kind)
    newest_first = (Job.created_at.desc(), Job.id.desc())
    # The count is a window over the matching rows, taken before LIMIT: it rides on the page.
    page = select(Job.id, func.count().over().label("total")).where(*where)
    page = page.order_by(*newest_first).limit(limit).offset(offset).subquery()
    query = (
        select(Job, Model, page.c.total)
        .join(page, page.c.id == Job.id)
        .outerjoin(Model, Model.job_id == Job.id)
        .order_by(*newest_first)
    )
    rows = session.execute(query).all()
    jobs: dict[str, JobModels] = {}
    for job, model, _ in rows:
        _, models = jobs.setdefault(job.id, (job, {}))
        if model is not None:
            models[model.tag] = model
    if rows or offset == 0:
        return list(jobs.values()), rows[0][2] if rows else 0
    # A page past the end has no row to carry the count.
    return [], session.execute(select(func.count()).select_from(Job).where(*where)).scalar_one()
