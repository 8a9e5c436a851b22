"""Metric rows: upsert by (job, name, step), read back as downsampled series."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from store.models import Metric, utcnow


def write_metrics(session: Session, job_id: str, rows: Iterable[tuple[str, int, float]]) -> int:
    """Insert (name, step, value) rows; a repeated (name, step) overwrites (resumed runs)."""
    now = utcnow()
    # Later rows win within a batch: one statement must not hit the unique key twice.
    unique = {(name, step): value for name, step, value in rows}
    values = [
        {"job_id": job_id, "name": name, "step": step, "value": float(value), "at": now}
        for (name, step), value in unique.items()
    ]
    if not values:
        return 0
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(Metric).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "name", "step"],
        set_={"value": stmt.excluded.value, "at": stmt.excluded.at},
    )
    session.execute(stmt)
    return len(values)


def downsample(points: Sequence[tuple[int, float]], max_points: int) -> list[tuple[int, float]]:
    """Keep at most max_points, evenly spaced over the series, always keeping the last point."""
    n = len(points)
    if max_points <= 0 or n <= max_points:
        return list(points)
    if max_points == 1:
        return [points[-1]]
    idx = sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})
    return [points[i] for i in idx]


def read_metrics(
    session: Session,
    job_id: str,
    names: Sequence[str] | None = None,
    since_step: int | None = None,
    until_step: int | None = None,
    max_points: int | None = None,
) -> dict[str, list[tuple[int, float]]]:
    query = select(Metric.name, Metric.step, Metric.value).where(Metric.job_id == job_id)
    if names:
        query = query.where(Metric.name.in_(list(names)))
    if since_step is not None:
        query = query.where(Metric.step >= since_step)
    if until_step is not None:
        query = query.where(Metric.step <= until_step)
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for name, step, value in session.execute(query.order_by(Metric.name, Metric.step)):
        series[name].append((step, value))
    if max_points:
        return {name: downsample(points, max_points) for name, points in series.items()}
    return dict(series)
