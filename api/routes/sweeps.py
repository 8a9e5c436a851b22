"""Sweeps: one request searches the hyperparameters (sweeps/), stops the losing trials early and
promotes the winner. Every trial is an ordinary train job of the caller's."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Response

from api import sweep_configs
from api.deps import MAX_INT64, OwnerDep, ServicesDep, SessionDep
from api.errors import PROTECTED_RESPONSES, Responses, error
from api.limits import SweepIdPath
from api.sweep_schemas import SweepCreate, SweepList, SweepOut, TrialList, TrialOut
from store import jobs as job_states
from store import sweeps as rows
from store.checkpoints import models_of_jobs
from store.metrics import latest_of_jobs, values_at
from store.models import Sweep
from sweeps import driver

log = logging.getLogger(__name__)
router = APIRouter(prefix="/sweeps", tags=["sweeps"], responses=PROTECTED_RESPONSES)
NO_SWEEP_404: Responses = {404: error("no such sweep (or another user's)")}


def sweep_out(sweep: Sweep, states: dict[str, int]) -> SweepOut:
    return SweepOut(
        id=sweep.id,
        owner=sweep.owner,
        name=sweep.name,
        state=sweep.state,
        sampler=sweep.spec.get("sampler", "tpe"),
        trials=sweep.trials,
        parallel=sweep.parallel,
        metric=sweep.metric,
        direction=sweep.direction,
        promote=sweep.promote,
        trial_states=states,
        best_trial=sweep.best_trial,
        best_value=sweep.best_value,
        best_job_id=sweep.best_job_id,
        note=sweep.note,
        error=sweep.error,
        spec=sweep.spec,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
    )


def _out(session, sweep: Sweep) -> SweepOut:  # noqa: ANN001
    return sweep_out(sweep, rows.trial_counts(session, [sweep.id])[sweep.id])


@router.post(
    "",
    status_code=201,
    response_model=SweepOut,
    summary="Start a sweep",
)
def create_sweep(
    body: SweepCreate,
    session: SessionDep,
    owner: OwnerDep,
    services: ServicesDep,
    response: Response,
) -> SweepOut:
    """`201` with the sweep and `Location: /sweeps/<id>`; its first `parallel` trials are queued
    as train jobs. Nothing is made when a field is wrong: a `422` names it (`space.lr_g`,
    `base.steps`, `trials`, `parallel`, `objective.metric`, ...)."""
    spec = sweep_configs.checked_spec(session, owner, body, services.settings)
    sweep = rows.create_sweep(session, owner, spec)
    session.commit()
    try:
        driver.advance(services.settings, sweep.id)  # the study and the first trials
    except Exception as e:  # an outage: the reaper's next pass makes them
        log.warning("sweep %s: its first trials wait for the next pass (%s)", sweep.id, e)
    session.refresh(sweep)
    response.headers["Location"] = f"/sweeps/{sweep.id}"
    return _out(session, sweep)


@router.get("", response_model=SweepList, summary="List your sweeps")
def list_sweeps(
    session: SessionDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=200, description="at most this many sweeps")] = 50,
    offset: Annotated[
        int, Query(ge=0, le=MAX_INT64, description="skip this many (newest first)")
    ] = 0,
) -> SweepList:
    """Your sweeps, newest first."""
    page, total = rows.list_sweeps(session, owner, limit, offset)
    counts = rows.trial_counts(session, [s.id for s in page])
    return SweepList(items=[sweep_out(s, counts[s.id]) for s in page], total=total)


@router.get("/{sweep_id}", response_model=SweepOut, summary="Read a sweep", responses=NO_SWEEP_404)
def read_sweep(sweep_id: SweepIdPath, session: SessionDep, owner: OwnerDep) -> SweepOut:
    """The sweep: its state, trials per state, the best trial so far and its value."""
    return _out(session, rows.owned_sweep(session, owner, sweep_id))


@router.get(
    "/{sweep_id}/trials",
    response_model=TrialList,
    summary="List a sweep's trials",
    responses=NO_SWEEP_404,
)
def list_trials(
    sweep_id: SweepIdPath,
    session: SessionDep,
    owner: OwnerDep,
    curves: Annotated[
        bool, Query(description="with each trial's objective at every step it was measured")
    ] = False,
) -> TrialList:
    """Each trial by number: its parameters, state, step, newest objective, and why it was
    pruned or failed."""
    sweep = rows.owned_sweep(session, owner, sweep_id)
    trials = rows.trial_jobs(session, sweep.id)
    ids = [j.id for j in trials]
    newest = latest_of_jobs(session, ids, sweep.metric)
    series = values_at(session, ids, sweep.metric) if curves else {}
    models = models_of_jobs(session, ids)
    names = list(sweep.spec.get("space", {}))
    items = []
    for job in trials:
        value = newest.get(job.id)
        items.append(
            TrialOut(
                number=job.trial_number,
                job_id=job.id,
                state=job.state,
                step=job.step,
                total_steps=job.total_steps,
                params={n: job.config.get(n) for n in names},
                objective=value[1] if value else None,
                objective_step=value[0] if value else None,
                reason=job.error,
                model_id=latest.id if (latest := models[job.id].get("latest")) else None,
                curve=series.get(job.id) if curves else None,
            )
        )
    return TrialList(sweep_id=sweep.id, metric=sweep.metric, direction=sweep.direction, items=items)


@router.post(
    "/{sweep_id}/cancel",
    response_model=SweepOut,
    summary="Cancel a sweep",
    responses={**NO_SWEEP_404, 409: error("the sweep has already ended")},
)
def cancel_sweep(sweep_id: SweepIdPath, session: SessionDep, owner: OwnerDep) -> SweepOut:
    """No new trials; its queued and running trials are cancelled (a running one stops at a
    checkpoint, which is kept). Ended trials and their models stay."""
    sweep = rows.owned_sweep(session, owner, sweep_id)
    if sweep.state != rows.RUNNING:
        raise job_states.InvalidTransition(
            f"sweep {sweep.id} is {sweep.state}; only a running sweep can be cancelled"
        )
    driver.cancel(session, sweep)
    session.commit()
    session.refresh(sweep)
    return _out(session, sweep)
