"""Datasets: upload an archive of class folders (or a packed file), list, show, delete.

`POST /datasets` streams the request body to object storage in parts (S3 multipart): the API
holds one part (SAGAN_DATASET_PART_BYTES) at a time and writes nothing to its own disk. The first
bytes decide the format (zip, tar, tar.gz, packed); anything else is a 415 before any storage is
written. A `pack` job then checks and packs it on a worker. Every read filters by owner: another
user's dataset is a 404, like a missing one, and no job of theirs can name it.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from api.deps import OwnerDep, Services, ServicesDep, SessionDep
from api.errors import PROTECTED_RESPONSES, InvalidField, Responses, error
from api.schemas import ClassCount, DatasetList, DatasetOut, DatasetRegister, PackedOut
from sagan_core.archive import HEAD_BYTES, detect_format
from sagan_core.config import RESOLUTIONS
from store import datasets as stored
from store import queue
from store.models import Dataset

log = logging.getLogger(__name__)
router = APIRouter(prefix="/datasets", tags=["datasets"], responses=PROTECTED_RESPONSES)
NO_DATASET_404: Responses = {
    404: error("no such dataset (or another user's): `dataset '<id or name>' not found`")
}
DatasetRef = Annotated[
    str, Path(max_length=64, description="the dataset's id, or its name (yours only)")
]
UPLOAD_413: Responses = {
    413: error("the upload is over SAGAN_MAX_DATASET_BYTES (the connection is closed)")
}


def dataset_out(ds: Dataset, progress: str | None = None) -> DatasetOut:
    return DatasetOut(
        id=ds.id,
        progress=progress,
        name=ds.name,
        state=ds.state,
        reason=ds.reason,
        source_format=ds.source_format,
        size_bytes=ds.size_bytes,
        content_hash=ds.content_hash,
        resolutions=list(ds.resolutions or []),
        classes=[
            ClassCount(name=n, count=c)
            for n, c in zip(ds.class_names or [], ds.class_counts or [], strict=False)
        ],
        image_count=ds.image_count,
        packed={
            r: PackedOut(size_bytes=p["size"], sha256=p["sha256"])
            for r, p in (ds.packed or {}).items()
        },
        pack_job_id=ds.pack_job_id,
        created_at=ds.created_at,
        updated_at=ds.updated_at,
    )


def _check_request(services: Services, name: str, resolutions: list[int], field: str) -> list[int]:
    """The name, and the resolutions sorted without repeats; a bad one is a 422 naming `field`."""
    if problem := stored.name_problem(name):
        raise InvalidField("name", problem)
    resolutions = sorted(set(resolutions))
    bad = [r for r in resolutions if r not in RESOLUTIONS]
    if bad:
        raise InvalidField(
            field, f"must be among {', '.join(map(str, RESOLUTIONS))} (got {bad[0]})"
        )
    most = services.settings.dataset_resolutions_max
    if len(resolutions) > most:
        raise InvalidField(field, f"at most {most} (SAGAN_DATASET_RESOLUTIONS_MAX)")
    return resolutions


def _new_row(services: Services, owner: str, name: str, resolutions: list[int]) -> str:
    """Insert the `uploading` row (within the caller's quota, its name unused); its id."""
    with services.sessionmaker() as session:
        try:
            most = services.settings.max_active_jobs
            ds = stored.create_dataset(session, owner, name, resolutions, max_active=most)
            session.commit()
        except IntegrityError:
            raise HTTPException(409, f"you already have a dataset named {name!r}") from None
        return ds.id


def _drop_row(services: Services, dataset_id: str) -> None:
    """The upload failed (its parts aborted, nothing of it stored): its row goes too."""
    with services.sessionmaker() as session:
        ds = session.get(Dataset, dataset_id)
        if ds is not None:
            stored.delete_dataset(session, ds)
            session.commit()


def _start_packing(services: Services, dataset_id: str, **fields: Any) -> DatasetOut:
    """The source is stored: `packing`, and its pack job sent."""
    with services.sessionmaker() as session:
        ds = session.get(Dataset, dataset_id)
        if ds is None:  # deleted while it uploaded
            raise HTTPException(409, "the dataset was deleted while it uploaded")
        job = stored.start_packing(session, ds, **fields)
        session.commit()
        queue.send_job(session, services.settings, job)
        return dataset_out(ds, stored.pack_progress(session, ds))


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    summary="Upload a dataset: a zip/tar(.gz) of class folders or a packed file",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    responses={
        400: error("an empty body"),
        409: error("you already have a dataset of that name"),
        **UPLOAD_413,
        415: error("the body is not a zip, tar, tar.gz or packed file (from its first bytes)"),
        429: error("the caller has SAGAN_MAX_ACTIVE_JOBS queued or running jobs"),
    },
)
async def upload_dataset(
    request: Request,
    owner: OwnerDep,
    services: ServicesDep,
    response: Response,
    name: Annotated[str, Query(max_length=64, description="unique among your datasets")],
    resolution: Annotated[
        list[int] | None,
        Query(description="resolutions to pack at (repeat it); default 32, or a packed file's own"),
    ] = None,
) -> DatasetOut:
    """The body is the file itself (any Content-Type), streamed to object storage; `201` with
    the dataset in `packing` and its `pack_job_id`. Follow the pack job (`GET /jobs/<id>`) or
    the dataset until it is `ready` (or `failed`, with the `reason`)."""
    settings = services.settings
    resolutions = _check_request(services, name, resolution or [], "resolution")
    dataset_id = await run_in_threadpool(_new_row, services, owner, name, resolutions)
    storage = services.storage
    part_bytes, limit = settings.dataset_part_bytes, settings.max_dataset_bytes
    sha, size, buf = hashlib.sha256(), 0, bytearray()
    upload, fmt = None, None

    async def flush(final: bool = False) -> None:
        while len(buf) >= part_bytes or (final and buf):
            n = min(part_bytes, len(buf))
            part = bytes(buf[:n])
            del buf[:n]
            await run_in_threadpool(upload.write_part, part)

    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(
                    413, f"upload over {limit} bytes, the limit (SAGAN_MAX_DATASET_BYTES)"
                )
            sha.update(chunk)
            buf += chunk
            if upload is None and len(buf) >= HEAD_BYTES:
                fmt = _format_of(bytes(buf[:HEAD_BYTES]))
                key = stored.source_key(dataset_id, fmt)
                upload = await run_in_threadpool(storage.upload, key)
            if upload is not None and len(buf) >= part_bytes:
                await flush()
        if size == 0:
            raise HTTPException(400, "empty body: send the archive or packed file as the body")
        if upload is None:  # shorter than HEAD_BYTES
            fmt = _format_of(bytes(buf))
            upload = await run_in_threadpool(storage.upload, stored.source_key(dataset_id, fmt))
        await flush(final=True)
        await run_in_threadpool(upload.complete)
    except BaseException as e:
        if upload is not None:
            try:
                await run_in_threadpool(upload.abort)
            except Exception:
                log.warning("dataset %s: could not abort the upload", dataset_id, exc_info=True)
        await run_in_threadpool(_drop_row, services, dataset_id)
        if isinstance(e, ClientDisconnect):
            raise HTTPException(400, "the client went away before the upload ended") from None
        raise
    out = await run_in_threadpool(
        _start_packing,
        services,
        dataset_id,
        source_format=fmt,
        source_key=stored.source_key(dataset_id, fmt),
        size_bytes=size,
        content_hash=sha.hexdigest(),
    )
    response.headers["Location"] = f"/datasets/{out.id}"
    return out


def _format_of(head: bytes) -> str:
    fmt = detect_format(head)
    if fmt is None:
        raise HTTPException(
            415,
            "not an archive: the body must be a zip, tar or tar.gz of class folders, or a "
            "packed file made by `sagan pack` (told from its first bytes)",
        )
    return fmt


@router.post(
    "/register",
    status_code=201,
    response_model=DatasetOut,
    summary="Register an object already in the bucket as a dataset",
    responses={
        404: error("no object at that key"),
        409: error("you already have a dataset of that name"),
        429: error("the caller has SAGAN_MAX_ACTIVE_JOBS queued or running jobs"),
    },
)
def register_dataset(
    body: DatasetRegister, owner: OwnerDep, services: ServicesDep, response: Response
) -> DatasetOut:
    """An archive or packed file someone put in object storage (e.g. with `aws s3 cp`) under one
    of SAGAN_DATASET_IMPORT_PREFIXES; packed by a pack job as an upload is. The object is
    left where it is (deleting the dataset does not delete it)."""
    resolutions = _check_request(services, body.name, body.resolutions, "resolutions")
    key = body.key.lstrip("/")
    prefixes = services.settings.dataset_import_prefixes
    bad = ".." in key.split("/") or "\x00" in key
    if bad or not any(p and key.startswith(p) for p in prefixes):
        raise InvalidField(
            "key", f"must lie under one of {prefixes} (SAGAN_DATASET_IMPORT_PREFIXES)"
        )
    size = services.storage.size(key)
    if size is None:
        raise HTTPException(404, f"no object at {key[:200]!r}")
    dataset_id = _new_row(services, owner, body.name, resolutions)
    out = _start_packing(services, dataset_id, source_key=key, size_bytes=size)
    response.headers["Location"] = f"/datasets/{out.id}"
    return out


@router.get("", response_model=DatasetList, summary="List your datasets")
def list_datasets(session: SessionDep, owner: OwnerDep) -> DatasetList:
    """The caller's datasets, newest first, each with its state, classes and packed files."""
    found = stored.list_datasets(session, owner)
    return DatasetList(items=[dataset_out(d, stored.pack_progress(session, d)) for d in found])


@router.get(
    "/{ref}", response_model=DatasetOut, summary="Read a dataset (by id or name)",
    responses=NO_DATASET_404,
)  # fmt: skip
def read_dataset(ref: DatasetRef, session: SessionDep, owner: OwnerDep) -> DatasetOut:
    """State (`failed` with its `reason`), classes with counts, image count, resolutions, source
    size and content hash."""
    ds = stored.owned_dataset(session, owner, ref)
    return dataset_out(ds, stored.pack_progress(session, ds))


@router.delete(
    "/{ref}",
    status_code=204,
    summary="Delete a dataset and its stored files",
    responses={**NO_DATASET_404, 409: error("a queued or running job uses it")},
)
def delete_dataset(
    ref: DatasetRef, session: SessionDep, owner: OwnerDep, services: ServicesDep
) -> Response:
    """Refused (`409`, naming the jobs) while a queued or running job uses it, its pack job
    included; a registered source object outside `datasets/` stays in the bucket."""
    ds = stored.owned_dataset(session, owner, ref)
    using = stored.jobs_using(session, ds)
    if using:
        ids = ", ".join(j.id for j in using[:5])
        raise HTTPException(409, f"dataset {ds.name!r} is used by active jobs: {ids}")
    dataset_id, keys = ds.id, stored.delete_dataset(session, ds)
    session.commit()
    for key in keys:
        try:
            services.storage.delete(key)
        except Exception:  # the row is gone; an orphan object is only space
            log.warning("dataset %s: could not delete %s", dataset_id, key, exc_info=True)
    return Response(status_code=204)
