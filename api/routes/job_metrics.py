"""GET /jobs/<id>/metrics: a job's metric series, downsampled in the database, the rendered
answer cached by (job, metrics_version, query) with that key as its ETag.

Issue #24: with 20 clients reading metrics, every other route's p99 rose 20-100x (GET /jobs from
~50 ms to 1.1-2.0 s, GET /healthz from 7-14 ms to 0.9-1.6 s). This route was async (#9) and made
its owner check, like the token lookup, with blocking SELECTs on the event loop: a profile of the
API under the readers had its loop thread blocked in psycopg for 60% of its time (six round trips
per read: pre-ping, SELECT, ROLLBACK, twice), idle 6%, and the thread pool idle. Every request's
every step queued behind the readers' on that one thread. Now the token lookup runs in the thread
pool (api.deps.get_identity), and this route is a plain (thread-pool) handler that first takes
one of Services.metric_reads' slots (api.deps.METRIC_READ_SLOTS), held until its answer is sent:
at most that many metric reads are at work at once, the others wait for a slot (behind each
other, costing the loop nothing), and the loop stays free for the other routes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from sqlalchemy.orm import Session

from api.deps import MAX_INT32, OwnerDep, ServicesDep
from api.errors import Responses, error
from api.limits import JobIdPath
from api.sampling import etag_matches
from api.schemas import MetricsOut, ProtocolOut
from sagan_core import metric_names
from store import jobs as job_states
from store.metrics import metric_names as stored_metric_names
from store.metrics import read_metrics, read_protocols

# No prefix: api.routes.jobs includes this router under its own (/jobs, tags, responses).
router = APIRouter()
NO_JOB_404: Responses = {404: error("no such job (or another user's): `job '<id>' not found`")}


async def metric_read_slot(request: Request) -> AsyncIterator[None]:
    """One of the process's metric-read slots, for the whole request: the route's first
    dependency (before the token lookup), released once the answer is sent."""
    async with request.app.state.services.metric_reads:
        yield


def _wanted(names: str | None, since_step: int | None, until_step: int | None) -> list[str]:
    """The names asked for (all: []); 400 for a name too long or an empty step window."""
    wanted = [n.strip() for n in (names or "").split(",") if n.strip()]
    for name in wanted:
        if len(name) > 64:
            raise HTTPException(400, f"names: metric name too long (over 64 characters): {name!r}")
    if since_step is not None and until_step is not None and until_step < since_step:
        raise HTTPException(400, f"until_step ({until_step}) is before since_step ({since_step})")
    return wanted


def _render(
    session: Session,
    job_id: str,
    kind: str,
    wanted: list[str],
    since_step: int | None,
    until_step: int | None,
    max_points: int,
    format: str,
) -> tuple[bytes, str]:
    """The answer's bytes and media type (a cache miss: the downsampling query)."""
    series = read_metrics(session, job_id, wanted or None, since_step, until_step, max_points)
    protocols = read_protocols(session, job_id)
    # A name with no rows here that the job's kind never writes is a typo unless the job has it
    # outside the step window. Checked only on a render (a cache miss), so repeated reads of a
    # custom name cost no extra query.
    can_write = metric_names.can_write
    if odd := [n for n in wanted if not series.get(n) and not can_write(kind, n)]:
        present = stored_metric_names(session, job_id)
        if unknown := [n for n in odd if n not in present]:
            raise HTTPException(400, metric_names.unknown_metrics_message(unknown, kind, present))
    for name in wanted:  # a requested name with no rows yet is an empty series, not missing
        series.setdefault(name, [])
    if format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["name", "step", "value"])
        for name in sorted(series):
            writer.writerows((name, step, repr(value)) for step, value in series[name])
        return buf.getvalue().encode(), "text/csv"
    body = MetricsOut(
        job_id=job_id,
        series=dict(sorted(series.items())),
        protocols=[ProtocolOut(step=st, protocol=p) for st, p in protocols],
    )
    return body.model_dump_json().encode(), "application/json"


@router.get(
    "/{job_id}/metrics",
    response_model=MetricsOut,
    summary="Read a job's metric series",
    description="Per metric name, `[step, value]` pairs in step order, downsampled to "
    "`max_points` (evenly spaced, the last step always kept); JSON, or CSV with `format=csv`. "
    "The ETag changes with every metrics write: `If-None-Match` answers `304` until new points "
    "arrive.\n\n"
    "`names` (comma-separated; all of the job's series when left out) takes the names the job "
    "has rows for and the names a job of its kind can write, whether or not it has written them "
    "yet, each then an empty series until its first row: a training job's "
    f"{', '.join(metric_names.listed('train'))}; an evaluation job's "
    f"{', '.join(metric_names.listed('evaluate'))}. Any other name is a `400` that suggests the "
    "closest name and lists the job's.",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "job_id": "3f2c9a6e8b1d4c7f9e0a1b2c3d4e5f60",
                        "series": {
                            "d_loss": [[1000, 0.81], [1050, 0.79]],
                            "fid": [[1000, 87.31]],
                        },
                    }
                },
                "text/csv": {"example": "name,step,value\nfid,1000,87.31\n"},
            },
            "description": "JSON, or CSV with format=csv",
        },
        304: {"description": "If-None-Match matched the ETag"},
        400: error(
            "a metric name the job neither has nor can write (`names: unknown metric 'd_los'; "
            "did you mean 'd_loss'? ...`), one over 64 characters, until_step before "
            "since_step, or a NUL byte"
        ),
        **NO_JOB_404,
    },
    dependencies=[Depends(metric_read_slot)],
)
def read_job_metrics(
    job_id: JobIdPath,
    owner: OwnerDep,
    services: ServicesDep,
    names: Annotated[
        str | None,
        Query(
            description="comma-separated metric names (default: all the job has)",
            examples=["d_loss,g_loss", "fid,is"],
        ),
    ] = None,
    since_step: Annotated[
        int | None, Query(ge=0, le=MAX_INT32, description="only points at this step or later")
    ] = None,
    until_step: Annotated[
        int | None, Query(ge=0, le=MAX_INT32, description="only points at this step or earlier")
    ] = None,
    max_points: Annotated[
        int, Query(ge=1, le=100_000, description="at most this many points per series")
    ] = 1000,
    format: Annotated[
        Literal["json", "csv"], Query(description="csv: `name,step,value` rows")
    ] = "json",
    if_none_match: Annotated[
        str | None, Header(description="the ETag of an answer you have: `304` if unchanged")
    ] = None,
) -> Any:
    with services.metric_sessionmaker() as session:  # the caller, the job, a render
        job = job_states.owned_job(session, owner, job_id)
        wanted = _wanted(names, since_step, until_step)
        kind = job.kind
        # The job's metrics_version changes with every write, so a read of the same query at the
        # same version is the same bytes: many viewers of one run cost one query per log event.
        query = (tuple(wanted), since_step, until_step, max_points, format)
        etag = services.metrics_cache.etag(job_id, job.metrics_version, query)
        if etag_matches(if_none_match, etag):
            return Response(status_code=304, headers={"ETag": etag})

        def render() -> tuple[bytes, str]:
            return _render(
                session, job_id, kind, wanted, since_step, until_step, max_points, format
            )

        content, media_type = services.metrics_cache.get_or_render(etag, render)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if format == "csv":
        headers["Content-Disposition"] = f'inline; filename="metrics-{job_id}.csv"'
    return Response(content, media_type=media_type, headers=headers)
