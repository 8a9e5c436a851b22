"""Live worker processes: each beats its row while it runs; readiness and operators read them."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from store.models import Worker, utcnow


def beat_worker(session: Session, name: str, queue: str) -> None:
    """Record that the worker process `name` (host:pid) is alive and serves `queue`."""
    now = utcnow()
    updated = session.execute(
        update(Worker)
        .where(Worker.name == name)
        .values(heartbeat_at=now, queue=queue)
        .execution_options(synchronize_session=False)
    )
    if updated.rowcount == 0:
        session.add(Worker(name=name, queue=queue, started_at=now, heartbeat_at=now))


def remove_worker(session: Session, name: str) -> None:
    session.execute(delete(Worker).where(Worker.name == name))


def live_workers(session: Session, within: timedelta) -> list[Worker]:
    """Workers that beat within the window, newest first."""
    cutoff = utcnow() - within
    return list(
        session.execute(
            select(Worker).where(Worker.heartbeat_at >= cutoff).order_by(Worker.heartbeat_at.desc())
        ).scalars()
    )
