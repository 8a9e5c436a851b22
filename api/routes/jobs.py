"""Jobs: start training or evaluation, follow progress, cancel (their metrics:
api.routes.job_metrics, included here)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from api import job_configs
from api.deps import (
    MAX_INT32,
    MAX_INT64,
    IdentityDep,
    OwnerDep,
    ServicesDep,
    SessionDep,
)
from api.errors import BODY_413, PROTECTED_RESPONSES, InvalidField, Responses, error
from api.limits import JobIdPath
from api.routes import job_metrics
from api.sampling import etag_matches
from api.schemas import (
    EventOut,
    JobContinue,
    JobCreate,
    JobList,
    JobOut,
    SampleGridList,
    SampleGridOut,
)
from store import job_reads, queue
from store import jobs as job_states
from store.checkpoints import job_models, newest_checkpoint
from store.job_eta import eta_seconds
from store.models import Job, Model
from store.sample_grids import sample_grid_key, sample_grid_steps

log = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs", tags=["jobs"], responses=PROTECTED_RESPONSES)
NO_JOB_404: Responses = {404: error("no such job (or another user's): `job '<id>' not found`")}
# ONE_HOP: the routes a dashboard polls are async and do their database work in one thread hop,
# their session opened and closed in it (a read session: no BEGIN or ROLLBACK; store.job_reads:
# one statement each). A sync route with a response model takes two hops (the handler, then the
# model's check), a session dependency one more to close it, and under load each hop waits for
# the GIL behind the busy threads (#24: 20 metric readers).

StateName = Literal[
    "queued", "running", "cancelling", "paused", "succeeded", "failed", "cancelled", "pruned"
]


# -- helpers shared by the handlers ---------------------------------------------------------------


def job_out(job: Job, models: dict[str, Model]) -> JobOut:
    progress = min(job.step / job.total_steps, 1.0) if job.total_steps > 0 else 0.0
    if job.state == job_states.SUCCEEDED:
        progress = 1.0
    return JobOut(
        id=job.id,
        owner=job.owner,
        kind=job.kind,
        state=job.state,
        config=job.config,
        step=job.step,
        total_steps=job.total_steps,
        progress=round(progress, 6),
        images_per_s=job.images_per_s,
        eta_seconds=eta_seconds(job),
        attempts=job.attempts,
        worker=job.worker if job.state in job_states.ACTIVE else None,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        heartbeat_at=job.heartbeat_at,
        latest_model_id=models["latest"].id if "latest" in models else None,
        best_model_id=models["best"].id if "best" in models else None,
        model_id=job.model_id,
        continued_from=job.continued_from,
        continued_from_step=job.continued_from_step,
        defaults_note=job.defaults_note,
        warning=job.warning,
        sweep_id=job.sweep_id,
        trial_number=job.trial_number,
    )


# -- handlers ----------------------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    summary="Start a training or an evaluation job",
    responses={
        200: {
            "model": JobOut,
            "description": "An Idempotency-Key replay: the job the first request created",
        },
        400: error(
            "a NUL byte in a header value or in a text value of the body (`detail` names it), "
            "or a body that is not UTF-8 or is nested too deeply to parse"
        ),
        404: error("evaluate: no such model (or another user's)"),
        409: error("the Idempotency-Key was used for a different request"),
        **BODY_413,
        429: error("the caller has SAGAN_MAX_ACTIVE_JOBS queued or running jobs"),
    },
)
def create_job(
    body: JobCreate,
    session: SessionDep,
    owner: OwnerDep,
    services: ServicesDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=128,
            description="any text of yours (per user): a retry with the same key and body "
            "returns the job the first request made, `200`; with another body, `409`",
            examples=["digits-run-1"],
        ),
    ] = None,
) -> JobOut:
    """`201` with the new job and `Location: /jobs/<id>`. A training job takes `config` (the
    `TrainConfig` schema: every field optional, with its choices, bounds and default), validated
    by the core and stored resolved (preset, widths and class count filled in); a bad field is a
    `422` naming `config.<field>`, an unknown key one that names the closest known key. An
    evaluation job takes `model_id` and optionally `samples`, `dataset`, `classes`. A retried
    request with the same `Idempotency-Key` is `200` with the job the first one created."""
    if body.kind == "train":
        for name in ("model_id", "samples", "dataset", "classes"):
            if getattr(body, name) is not None:
                raise InvalidField(name, "only for evaluate jobs; a training job takes `config`")
        config = job_configs.resolve_train_config(session, owner, body.config or {})
        config, defaults_note = job_configs.choose_defaults(session, config, services.settings)
        config, total_steps = job_configs.validated_train_config(config, services.settings)
        model_id = None
    else:
        if body.config is not None:
            raise InvalidField(
                "config", "not used by evaluate jobs; give model_id, samples, dataset, classes"
            )
        config, total_steps, model_id = job_configs.evaluate_config(
            session, owner, body, services.settings
        )
        defaults_note = None

    job, created = job_states.create_job(
        session,
        owner=owner,
        kind=body.kind,
        config=config,
        total_steps=total_steps,
        model_id=model_id,
        idempotency_key=idempotency_key or None,
        max_active=services.settings.max_active_jobs,
        defaults_note=defaults_note,
    )
    if not created and (job.kind, job.config, job.model_id) != (body.kind, config, model_id):
        raise HTTPException(
            409,
            f"Idempotency-Key {idempotency_key!r} was already used for a different request "
            f"(job {job.id}); use a new key for a new job",
        )
    session.commit()
    if created:
        queue.send_job(session, services.settings, job)
    else:
        response.status_code = 200
    response.headers["Location"] = f"/jobs/{job.id}"
    return job_out(job, job_models(session, job.id))


@router.get(
    "",
    response_model=JobList,
    summary="List jobs",
    responses={403: error("all_owners without an admin token")},
)
async def list_jobs(
    services: ServicesDep,
    identity: IdentityDep,
    state: Annotated[StateName | None, Query(description="only jobs in this state")] = None,
    kind: Annotated[
        Literal["train", "evaluate", "pack"] | None, Query(description="only jobs of this kind")
    ] = None,
    all_owners: Annotated[
        bool, Query(description="admins only: everyone's jobs, not just the caller's")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=200, description="at most this many jobs")] = 50,
    offset: Annotated[
        int, Query(ge=0, le=MAX_INT64, description="skip this many (newest first)")
    ] = 0,
) -> JobList:
    """The caller's jobs, newest first (an admin's token may ask for everyone's)."""
    if all_owners and not identity.admin:
        raise HTTPException(403, "all_owners: only an admin token may list everyone's jobs")
    owner = None if all_owners else identity.user

    def read() -> JobList:
        with services.read_sessionmaker() as session:
            page, total = job_reads.page_of_jobs(session, owner, state, kind, limit, offset)
            items = [job_out(job, models) for job, models in page]
        return JobList(items=items, total=total, limit=limit, offset=offset)

    return await run_in_threadpool(read)  # one hop (ONE_HOP)


@router.get("/{job_id}", response_model=JobOut, summary="Read a job", responses=NO_JOB_404)
async def read_job(job_id: JobIdPath, services: ServicesDep, owner: OwnerDep) -> JobOut:
    """The job's state, progress (step, images/s, ETA), error, and its latest and best models."""

    def read() -> JobOut:
        with services.read_sessionmaker() as session:
            return job_out(*job_reads.job_with_models(session, owner, job_id))

    return await run_in_threadpool(read)  # one hop (ONE_HOP)


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a job",
    responses={**NO_JOB_404, 409: error("the job has already finished")},
)
def cancel_job(job_id: JobIdPath, session: SessionDep, owner: OwnerDep) -> JobOut:
    """A queued job is cancelled at once; a running one is asked to stop (`cancelling`)."""
    job = job_states.owned_job(session, owner, job_id)
    job_states.request_cancel(session, job.id)
    session.commit()
    session.refresh(job)
    return job_out(job, job_models(session, job.id))


@router.post(
    "/{job_id}/continue",
    status_code=201,
    response_model=JobOut,
    summary="Continue a training job from its newest checkpoint",
    responses={
        **NO_JOB_404,
        409: error(
            "the job has no checkpoint yet, is still active (queued or running), or is not a "
            "train job"
        ),
        **BODY_413,
        429: error("the caller has SAGAN_MAX_ACTIVE_JOBS queued or running jobs"),
    },
)
def continue_job(
    job_id: JobIdPath,
    body: JobContinue,
    session: SessionDep,
    owner: OwnerDep,
    services: ServicesDep,
    response: Response,
) -> JobOut:
    """`201` with a new train job that starts from the old job's newest checkpoint and trains on
    to `steps` (the step counter goes on: its metrics begin after the checkpoint's step), with
    the old job's config and the changes in `config` (e.g. `d_steps`, `batch_size`,
    `checkpoint_every`, `eval_every`). Fields that shape the networks (`resolution`,
    `num_classes`, `g_ch`, `d_ch`, `z_dim`, ...) and those the checkpoint carries on (learning
    rates, betas, seed) cannot change (422 naming the field). The new job's `continued_from`
    names the old one; the old one is left as it is."""
    job = job_states.owned_job(session, owner, job_id)
    if job.kind != "train":
        raise HTTPException(409, f"job {job.id} is an {job.kind} job; only train jobs continue")
    if job.state == job_states.PAUSED:
        raise HTTPException(
            409,
            f"job {job.id} is paused: a sweep's trial waiting at a rung of successive halving; "
            "its sweep resumes or prunes it (or cancel it, then continue it)",
        )
    if job.state in job_states.ACTIVE:
        raise HTTPException(
            409,
            f"job {job.id} is {job.state}; continue it once it has ended (or cancel it: it "
            "saves a checkpoint first)",
        )
    ckpt = newest_checkpoint(session, job.id)
    if ckpt is None:
        raise HTTPException(
            409,
            f"job {job.id} has no checkpoint to continue from (it {job.state} before its "
            "first one); start a new job instead",
        )
    settings = services.settings
    config, total_steps = job_configs.continued_config(job.config, body, ckpt.step, settings)
    new, _ = job_states.create_job(
        session,
        owner=owner,
        kind="train",
        config=config,
        total_steps=total_steps,
        max_active=settings.max_active_jobs,
    )
    new.continued_from, new.continued_from_step, new.step = job.id, ckpt.step, ckpt.step
    job_states.add_event(
        session, new.id, "info", f"continues job {job.id} from its checkpoint at step {ckpt.step}"
    )
    session.commit()
    queue.send_job(session, services.settings, new)
    response.headers["Location"] = f"/jobs/{new.id}"
    return job_out(new, {})


@router.get(
    "/{job_id}/events",
    response_model=list[EventOut],
    summary="List a job's events",
    responses=NO_JOB_404,
)
def list_events(
    job_id: JobIdPath,
    session: SessionDep,
    owner: OwnerDep,
    after: Annotated[
        int | None,
        Query(ge=-MAX_INT32 - 1, le=MAX_INT32, description="only events with a larger id"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many events")] = 200,
) -> list[EventOut]:
    """State changes and notes (retries, resumes, the broker being away), oldest first; poll
    with `after` set to the last id seen."""
    job_states.owned_job(session, owner, job_id)
    rows = job_states.job_events(session, job_id, after, limit)
    return [EventOut.model_validate(e, from_attributes=True) for e in rows]


# GET /jobs/<id>/metrics, here in the route order: a module of its own (#24)
router.include_router(job_metrics.router)


@router.get(
    "/{job_id}/samples",
    response_model=SampleGridList,
    summary="List a job's sample grids",
    responses=NO_JOB_404,
)
def list_sample_grids(
    job_id: JobIdPath, session: SessionDep, owner: OwnerDep, services: ServicesDep
) -> SampleGridList:
    """The sample grids the job rendered every `sample_every` steps (the EMA generator, the same
    seed each time, up to ten classes by eight): how its images improved. They stay with the job."""
    job_states.owned_job(session, owner, job_id)
    session.close()
    steps = sample_grid_steps(services.storage, job_id)
    items = [SampleGridOut(step=s, url=f"/jobs/{job_id}/samples/{s}") for s in steps]
    return SampleGridList(job_id=job_id, items=items)


@router.get(
    "/{job_id}/samples/{step}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "the grid rendered at that step"},
        304: {"description": "If-None-Match matched the ETag"},
        404: error("no such job, or no grid at that step"),
    },
    summary="Read one of a job's sample grids",
)
def read_sample_grid(
    job_id: JobIdPath,
    step: Annotated[
        int, Path(ge=0, le=MAX_INT32, description="a step from the list of the job's grids")
    ],
    session: SessionDep,
    owner: OwnerDep,
    services: ServicesDep,
    if_none_match: Annotated[
        str | None, Header(description="the ETag of the grid you have: `304`")
    ] = None,
) -> Response:
    """One stored grid as a PNG; a grid never changes, so its ETag is its address."""
    job_states.owned_job(session, owner, job_id)
    session.close()
    key = sample_grid_key(job_id, step)
    etag = '"' + key.replace("/", "-") + '"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400"}
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    png = services.storage.get_bytes(key)
    if png is None:
        raise HTTPException(404, f"job {job_id} has no sample grid at step {step}")
    return Response(png, media_type="image/png", headers=headers)
