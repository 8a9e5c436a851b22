"""Sweep rows: creation, the owner's reads, their trials (train jobs with the sweep's id), and the
lease that lets one process at a time advance a sweep (sweeps.driver).

running -> succeeded (every trial ended, at least one with a value) | failed (none had one)
running -> cancelled (POST /sweeps/<id>/cancel: its active trials are asked to stop)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from store.models import Job, Sweep, utcnow

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"
STATES = (RUNNING, SUCCEEDED, FAILED, CANCELLED)
LEASE = timedelta(seconds=120)  # a driver that died holding it is replaced after this


class SweepNotFound(LookupError):
    pass


def create_sweep(session: Session, owner: str, spec: dict[str, Any]) -> Sweep:
    objective = spec["objective"]
    sweep = Sweep(
        owner=owner,
        name=spec.get("name"),
        state=RUNNING,
        spec=spec,
        trials=spec["trials"],
        parallel=spec["parallel"],
        metric=objective["metric"],
        direction=objective["direction"],
        promote=spec.get("promote"),
    )
    session.add(sweep)
    session.flush()
    return sweep


def owned_sweep(session: Session, owner: str, sweep_id: str) -> Sweep:
    """The owner's sweep; someone else's is reported exactly like a missing one."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or sweep.owner != owner:
        raise SweepNotFound(sweep_id)
    return sweep


def list_sweeps(
    session: Session, owner: str, limit: int = 50, offset: int = 0
) -> tuple[list[Sweep], int]:
    where = [Sweep.owner == owner]
    total = session.execute(select(func.count()).select_from(Sweep).where(*where)).scalar_one()
    rows = session.execute(
        select(Sweep)
        .where(*where)
        .order_by(Sweep.created_at.desc(), Sweep.id.desc())
        .limit(limit)
        .offset(offset)
    ).scalars()
    return list(rows), total


def trial_jobs(session: Session, sweep_id: str) -> list[Job]:
    """The sweep's trials, by trial number."""
    return list(
        session.execute(
            select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_number)
        ).scalars()
    )


def trial_counts(session: Session, sweep_ids: list[str]) -> dict[str, dict[str, int]]:
    """{sweep id: {job state: trials in it}} for a page of sweeps, in one query."""
    counts: dict[str, dict[str, int]] = {s: {} for s in sweep_ids}
    if not sweep_ids:
        return counts
    rows = session.execute(
        select(Job.sweep_id, Job.state, func.count())
        .where(Job.sweep_id.in_(sweep_ids))
        .group_by(Job.sweep_id, Job.state)
    )
    for sweep_id, state, n in rows:
        counts[sweep_id][state] = n
    return counts


def running_sweep_ids(session: Session) -> list[str]:
    return list(session.execute(select(Sweep.id).where(Sweep.state == RUNNING)).scalars())


def take_lease(session: Session, sweep_id: str) -> bool:
    """The right to advance the sweep, for LEASE; False while another process holds it."""
    now = utcnow()
    taken = session.execute(
        update(Sweep)
        .where(
            Sweep.id == sweep_id,
            (Sweep.lease_until.is_(None)) | (Sweep.lease_until < now),
        )
        .values(lease_until=now + LEASE, pokes=0)
        .execution_options(synchronize_session=False)
    )
    return taken.rowcount == 1


def poke(session: Session, sweep_id: str) -> None:
    """Tell the lease's holder that something changed after it looked: it looks again."""
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(pokes=Sweep.pokes + 1)
        .execution_options(synchronize_session=False)
    )


def release_lease(session: Session, sweep_id: str) -> bool:
    """Give the lease back, unless it was poked meanwhile: then keep it (returns False) and look
    again. Either the poke lands first and the holder sees it, or the lease is free for the
    poker."""
    released = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.pokes == 0)
        .values(lease_until=None)
        .execution_options(synchronize_session=False)
    )
    if released.rowcount == 1:
        return True
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(pokes=0, lease_until=utcnow() + LEASE)
        .execution_options(synchronize_session=False)
    )
    return False


def drop_lease(session: Session, sweep_id: str) -> None:
    """Free the lease at once (its holder's pass failed): the next pass need not wait it out."""
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(lease_until=None, pokes=0)
        .execution_options(synchronize_session=False)
    )


def set_note(session: Session, sweep_id: str, note: str | None) -> None:
    """Why the sweep waits (the owner's quota is full), or None when it no longer does."""
    session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(note=note)
        .execution_options(synchronize_session=False)
    )


def cancel_sweep(session: Session, sweep_id: str) -> bool:
    """running -> cancelled; False if it had already ended."""
    moved = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.state == RUNNING)
        .values(state=CANCELLED, finished_at=utcnow(), note="cancelled")
        .execution_options(synchronize_session=False)
    )
    return moved.rowcount == 1


def end_sweep(session: Session, sweep_id: str, state: str, error: str | None = None) -> bool:
    moved = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.state == RUNNING)
        .values(state=state, finished_at=utcnow(), error=error, note=None)
        .execution_options(synchronize_session=False)
    )
    return moved.rowcount == 1
