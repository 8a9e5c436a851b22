"""What a training job leaving the recipe out would get (sagan_core.recipe): the preset from the
workers that would run it, augmentation from the data set's size, and why. Its own router, included
before the jobs router so that `/jobs/defaults` is not read as a job id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api import job_configs
from api.deps import MAX_INT32, OwnerDep, ServicesDep, SessionDep
from api.errors import PROTECTED_RESPONSES, InvalidField
from api.schemas import DefaultsOut

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=PROTECTED_RESPONSES)


@router.get(
    "/defaults",
    response_model=DefaultsOut,
    summary="What a training job leaving the recipe out would get",
)
def job_defaults(
    session: SessionDep,
    owner: OwnerDep,
    services: ServicesDep,
    dataset: Annotated[
        str, Query(max_length=64, description="a built-in dataset, or your dataset's id or name")
    ] = "digits",
    resolution: Annotated[
        int | None,
        Query(ge=1, le=MAX_INT32, description="default: 32, or a stored dataset's largest"),
    ] = None,
    gpus: Annotated[int, Query(ge=1, le=MAX_INT32, description="GPUs of the job")] = 1,
) -> DefaultsOut:
    """The preset (from the workers that would run it: SAGAN_GPU_QUEUES) and augmentation (from
    the data set's size) that `POST /jobs` would choose for a config naming only these fields,
    with the reason: what the dashboard's start form shows before you start."""
    config: dict[str, Any] = {"dataset": dataset, "gpus": gpus}
    if resolution is not None:
        config["resolution"] = resolution
    config = job_configs.resolve_train_config(session, owner, config)
    chosen, note = job_configs.choose_defaults(session, config, services.settings)
    if chosen.get("preset") is None:
        raise InvalidField("dataset", f"cannot choose defaults for {dataset!r}")
    return DefaultsOut(
        preset=chosen["preset"],
        diff_augment=chosen.get("diff_augment"),
        ada_target=chosen.get("ada_target"),
        note=note,
    )
