"""Metric rows: upsert by (job, name, step), read back as downsampled series."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import BigInteger, ColumnElement, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from store.models import Job, Metric, ScoreProtocol, utcnow


def write_metrics(session: Session, job_id: str, rows: Iterable[tuple[str, int, float]]) -> int:
    """Insert (name, step, value) rows; a repeated (name, step) overwrites (resumed runs)."""
    now = utcnow()
    # Later rows win within a batch: one statement must not hit the unique key twice. A value
    # that is not a finite number is not recorded: SQLite would store NaN as NULL (refused), and
    # PostgreSQL's NaN would not survive JSON; a diverged run fails with its reason instead.
    unique = {(name, step): value for name, step, value in rows if math.isfinite(float(value))}
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
    _bump_metrics_version(session, job_id)
    return len(values)


def _bump_metrics_version(session: Session, job_id: str) -> None:
    """Readers key cached series by it: every write of metrics or protocols changes it."""
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(metrics_version=Job.metrics_version + 1)
        .execution_options(synchronize_session=False)
    )


# Downsampling, here and in read_metrics' SQL alike: a series of n points (in step order) with
# n <= max_points is kept whole; otherwise exactly max_points points are kept, evenly spaced over
# the series' indices, the first and the last always among them: point k (0-based) is kept when
# it opens one of max_points - 1 equal index buckets, k * (max_points - 1) // (n - 1), in
# integers, i.e. k = ceil(j * (n - 1) / (max_points - 1)) for j = 0 .. max_points - 1.
# max_points == 1 keeps the last point only.


def _opens_bucket(k: int, n: int, max_points: int) -> bool:
    return k == 0 or k * (max_points - 1) // (n - 1) > (k - 1) * (max_points - 1) // (n - 1)


def downsample(points: Sequence[tuple[int, float]], max_points: int) -> list[tuple[int, float]]:
    """The rule above on (step, value) points in step order: read_metrics applies it in SQL,
    this is its plain-Python statement."""
    n = len(points)
    if max_points <= 0 or n <= max_points:
        return list(points)
    if max_points == 1:
        return [points[-1]]
    return [p for k, p in enumerate(points) if _opens_bucket(k, n, max_points)]


def read_metrics(
    session: Session,
    job_id: str,
    names: Sequence[str] | None = None,
    since_step: int | None = None,
    until_step: int | None = None,
    max_points: int | None = None,
) -> dict[str, list[tuple[int, float]]]:
    """Series by name, (step, value) in step order, each downsampled to max_points in the
    database (see downsample); the filters apply first, so a step range is downsampled alone."""
    # Table columns, not ORM attributes: the rows come back through Core, which costs half the
    # Python time of the ORM's row loading on a 10,000-point answer.
    m = Metric.__table__.c
    wanted: list[ColumnElement[bool]] = [m.job_id == job_id]
    if names:
        wanted.append(m.name.in_(list(names)))
    if since_step is not None:
        wanted.append(m.step >= since_step)
    if until_step is not None:
        wanted.append(m.step <= until_step)

    if not max_points or max_points <= 0:
        query = select(m.name, m.step, m.value).where(*wanted)
        query = query.order_by(m.name, m.step)
    else:
        # One window over each series, in the (job_id, name, step) key's order (no sort), its
        # frame the whole series: each point's 1-based index and the series' size in one pass.
        series = {"partition_by": m.name, "order_by": m.step, "rows": (None, None)}
        points = (
            select(
                m.name,
                m.step,
                m.value,
                func.row_number().over(**series).label("rn"),
                func.count().over(**series).label("n"),
            )
            .where(*wanted)
            .subquery("points")
        )
        p = points.c
        if max_points == 1:
            keep = p.rn == p.n
        else:
            # _opens_bucket with k = rn - 1. NULLIF: n == 1 is kept whole by the first test, but
            # SQL does not promise to stop there. Both databases divide integers in 64 bits.
            last = func.nullif(p.n - 1, 0, type_=BigInteger)
            keep = or_(
                p.rn == 1,
                (p.rn - 1) * (max_points - 1) // last > (p.rn - 2) * (max_points - 1) // last,
            )
        query = (
            select(p.name, p.step, p.value)
            .where(or_(p.n <= max_points, keep))
            .order_by(p.name, p.step)
        )

    result: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for name, step, value in session.execute(query):
        result[name].append((step, value))
    return dict(result)


def metric_names(session: Session, job_id: str) -> list[str]:
    """The names a job has rows for, sorted."""
    m = Metric.__table__.c
    query = select(m.name).where(m.job_id == job_id).distinct().order_by(m.name)
    return list(session.execute(query).scalars())


def latest_values(
    session: Session, job_id: str, names: Sequence[str]
) -> dict[str, tuple[int, float]]:
    """The newest (step, value) of each of `names` the job has recorded (missing ones left out)."""
    newest = (
        select(Metric.name, func.max(Metric.step).label("step"))
        .where(Metric.job_id == job_id, Metric.name.in_(list(names)))
        .group_by(Metric.name)
        .subquery()
    )
    rows = session.execute(
        select(Metric.name, Metric.step, Metric.value)
        .join(newest, (Metric.name == newest.c.name) & (Metric.step == newest.c.step))
        .where(Metric.job_id == job_id)
    )
    return {name: (step, value) for name, step, value in rows}


def write_protocol(session: Session, job_id: str, step: int, protocol: dict) -> None:
    """Record how the scores of `step` were measured; a resumed run's repeated step replaces it."""
    row = session.scalar(
        select(ScoreProtocol).where(ScoreProtocol.job_id == job_id, ScoreProtocol.step == step)
    )
    if row is None:
        session.add(ScoreProtocol(job_id=job_id, step=step, protocol=protocol))
    else:
        row.protocol, row.at = protocol, utcnow()
    _bump_metrics_version(session, job_id)


def read_protocols(session: Session, job_id: str) -> list[tuple[int, dict]]:
    """(step, protocol) of each of the job's evaluations, in step order."""
    rows = session.execute(
        select(ScoreProtocol.step, ScoreProtocol.protocol)
        .where(ScoreProtocol.job_id == job_id)
        .order_by(ScoreProtocol.step)
    )
    return [(int(step), dict(protocol)) for step, protocol in rows]


def latest_of_jobs(
    session: Session, job_ids: Sequence[str], name: str
) -> dict[str, tuple[int, float]]:
    """The newest (step, value) of metric `name` of each of `job_ids` that has one: a sweep's
    trials' objective, in one query."""
    if not job_ids:
        return {}
    newest = (
        select(Metric.job_id, func.max(Metric.step).label("step"))
        .where(Metric.job_id.in_(list(job_ids)), Metric.name == name)
        .group_by(Metric.job_id)
        .subquery()
    )
    rows = session.execute(
        select(Metric.job_id, Metric.step, Metric.value)
        .join(newest, (Metric.job_id == newest.c.job_id) & (Metric.step == newest.c.step))
        .where(Metric.name == name)
    )
    return {job_id: (step, value) for job_id, step, value in rows}


def values_at(session: Session, job_ids: Sequence[str], name: str) -> dict[str, list[tuple]]:
    """Every (step, value) of metric `name` of each job, by step: a sweep's objective curves."""
    out: dict[str, list[tuple[int, float]]] = {j: [] for j in job_ids}
    if not job_ids:
        return out
    rows = session.execute(
        select(Metric.job_id, Metric.step, Metric.value)
        .where(Metric.job_id.in_(list(job_ids)), Metric.name == name)
        .order_by(Metric.job_id, Metric.step)
    )
    for job_id, step, value in rows:
        out[job_id].append((step, value))
    return out
