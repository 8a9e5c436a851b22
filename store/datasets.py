"""Stored datasets: rows owned like jobs, their states, and which jobs use them.

uploading -> packing -> ready | failed. Every read of a user's dataset filters by owner, so
another user's dataset is a missing one. A job uses a dataset when its config names it
(`dataset_id`: train and evaluate jobs; the pack job that packs it).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.jobs import ACTIVE, QUEUED, check_quota, create_job
from store.models import Dataset, Job

UPLOADING, PACKING, READY, FAILED = "uploading", "packing", "ready", "failed"
STATES = (UPLOADING, PACKING, READY, FAILED)
# A name a person types: letters, digits, '.', '_', '-'; never 32 hex digits (that is an id).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ID_RE = re.compile(r"^[0-9a-f]{32}$")


class DatasetNotFound(LookupError):
    pass


def source_key(dataset_id: str, fmt: str) -> str:
    return f"datasets/{dataset_id}/source.{fmt}"


def packed_key(dataset_id: str, resolution: int) -> str:
    return f"datasets/{dataset_id}/packed-r{resolution}.pack"


def name_problem(name: str) -> str | None:
    if ID_RE.match(name):
        return "must not look like an id (32 hex digits)"
    if not NAME_RE.match(name):
        return "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


def create_dataset(
    session: Session,
    owner: str,
    name: str,
    resolutions: list[int],
    *,
    max_active: int | None = None,
    **fields: Any,
) -> Dataset:
    """A new row in `uploading`; IntegrityError (flush) when the owner has that name. With
    `max_active`, QuotaExceeded when the owner has that many active jobs: its pack job counts,
    and an upload is refused before it starts rather than once it is stored."""
    if max_active is not None:
        check_quota(session, owner, max_active, "a dataset is packed by a job")
    ds = Dataset(owner=owner, name=name, state=UPLOADING, resolutions=resolutions, **fields)
    session.add(ds)
    session.flush()
    return ds


def by_name(session: Session, owner: str, name: str) -> Dataset | None:
    return session.execute(
        select(Dataset).where(Dataset.owner == owner, Dataset.name == name)
    ).scalar_one_or_none()


def owned_dataset(session: Session, owner: str, ref: str) -> Dataset:
    """The owner's dataset by id or name; anyone else's is DatasetNotFound, as a missing one."""
    if "\x00" in ref:  # no name has one (PostgreSQL could not even be asked)
        raise DatasetNotFound(ref)
    ds = session.get(Dataset, ref) if ID_RE.match(ref) else None
    if ds is None or ds.owner != owner:
        ds = by_name(session, owner, ref)
    if ds is None:
        raise DatasetNotFound(ref)
    return ds


def list_datasets(session: Session, owner: str) -> list[Dataset]:
    return list(
        session.execute(
            select(Dataset).where(Dataset.owner == owner).order_by(Dataset.created_at.desc())
        ).scalars()
    )


def jobs_using(session: Session, ds: Dataset) -> list[Job]:
    """The owner's active jobs whose config names the dataset (active jobs per owner are few:
    SAGAN_MAX_ACTIVE_JOBS), and its pack job while it runs."""
    active = session.execute(
        select(Job).where(Job.owner == ds.owner, Job.state.in_(ACTIVE))
    ).scalars()
    return [j for j in active if (j.config or {}).get("dataset_id") == ds.id]


def start_packing(session: Session, ds: Dataset, **fields: Any) -> Job:
    """Its source is stored (`fields`: where, its size...): the dataset is `packing`, and a queued
    pack job (returned, to be sent once committed) packs it."""
    for name, value in fields.items():
        setattr(ds, name, value)
    job, _ = create_job(
        session,
        owner=ds.owner,
        kind="pack",
        config={"dataset_id": ds.id, "name": ds.name, "resolutions": list(ds.resolutions)},
        total_steps=0,
    )
    ds.state, ds.pack_job_id = PACKING, job.id
    return job


def delete_dataset(session: Session, ds: Dataset) -> list[str]:
    """Delete the row; the storage keys of the files that were its own (its packed files, and its
    source when uploaded: a registered object outside `datasets/<id>/` is not), to delete next."""
    keys = [p["key"] for p in (ds.packed or {}).values()] + [ds.source_key]
    own_prefix = f"datasets/{ds.id}/"
    session.delete(ds)
    return sorted({k for k in keys if k and k.startswith(own_prefix)})


def set_state(session: Session, dataset_id: str, state: str, **fields: Any) -> Dataset | None:
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        return None
    ds.state = state
    for name, value in fields.items():
        setattr(ds, name, value)
    return ds


def pack_progress(session: Session, ds: Dataset) -> str | None:
    """Where a packing dataset is: `queued behind 2 pack jobs`, `waiting for a worker`, or
    `packing 312/1,152 images`; None once it is not packing."""
    if ds.state != PACKING or not ds.pack_job_id:
        return None
    job = session.get(Job, ds.pack_job_id)
    if job is None:
        return None
    if job.state == QUEUED:
        ahead = session.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.kind == "pack", Job.state.in_(ACTIVE), Job.created_at < job.created_at)
        ).scalar_one()
        if ahead:
            return f"queued behind {ahead} pack job{'s' if ahead > 1 else ''}"
        return "queued: waiting for a worker of the pack queue"
    if job.total_steps:
        return f"packing {job.step:,}/{job.total_steps:,} images"
    return "packing: reading the upload"
