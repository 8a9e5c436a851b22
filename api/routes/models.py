"""Models: the trained generators of jobs, their sample grids and checkpoint downloads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from api.deps import MAX_INT64, OwnerDep, ServicesDep, SessionDep
from api.errors import OUTAGE_RETRY_AFTER_S, PROTECTED_RESPONSES, Responses, error
from api.limits import ModelIdPath
from api.sampling import (
    SampleRequestError,
    attention_etag,
    check_query_pixel,
    check_sample_query,
    etag_matches,
    sample_etag,
)
from api.schemas import CheckpointUrl, ModelList, ModelOut
from sagan_core.classes import ClassError, resolve_class
from store import checkpoints
from store.aliases import list_aliases
from store.checkpoints import owned_model
from store.models import Model
from store.outages import is_outage
from store.storage import StorageError

router = APIRouter(prefix="/models", tags=["models"], responses=PROTECTED_RESPONSES)
NO_MODEL_404: Responses = {
    404: error("no such model (or another user's): `model '<id>' not found`")
}
UNREADABLE_503: Responses = {
    503: error("the model's checkpoint is missing from storage or unreadable")
}

# Private: models belong to one user. no-cache: keep it, but ask (cheaply, by ETag) before reuse,
# because a model's "latest" checkpoint moves on while its job trains.
SAMPLE_CACHE_CONTROL = "private, no-cache"


def model_out(model: Model, aliases: list[str] | None = None) -> ModelOut:
    out = ModelOut.model_validate(model, from_attributes=True)
    out.aliases = sorted(aliases or [])
    return out


def _aliases_by_model(session: SessionDep, owner: str) -> dict[str, list[str]]:
    by_model: dict[str, list[str]] = {}
    for row in list_aliases(session, owner):
        by_model.setdefault(row.model_id, []).append(row.alias)
    return by_model


def unreadable(model_id: str, error: StorageError) -> HTTPException:
    """A 503 for a checkpoint storage cannot give now; `Retry-After` when storage is away."""
    headers = {"Retry-After": str(OUTAGE_RETRY_AFTER_S)} if is_outage(error) else None
    return HTTPException(503, f"checkpoint of model {model_id} is not readable: {error}", headers)


def _png_response(
    model_id: str, step: int, etag: str, if_none_match: str | None, render: Callable[[], bytes]
) -> Response:
    """A rendered PNG addressed by its ETag: 304 when the client has it, 503 if unreadable."""
    headers = {"ETag": etag, "Cache-Control": SAMPLE_CACHE_CONTROL}
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    try:
        png = render()
    except StorageError as e:
        raise unreadable(model_id, e) from e
    headers["X-Checkpoint-Step"] = str(step)
    return Response(png, media_type="image/png", headers=headers)


@router.get("", response_model=ModelList, summary="List models")
def list_models(
    session: SessionDep,
    owner: OwnerDep,
    job_id: Annotated[str | None, Query(description="only the models of this job")] = None,
    tag: Annotated[
        Literal["latest", "best"] | None,
        Query(description="latest: the newest checkpoint; best: the lowest FID so far"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="at most this many models")] = 50,
    offset: Annotated[
        int, Query(ge=0, le=MAX_INT64, description="skip this many (most recent first)")
    ] = 0,
) -> ModelList:
    """The caller's models (each job's `latest` and `best` generator), most recently updated
    first."""
    rows, total = checkpoints.list_models(session, owner, job_id, tag, limit, offset)
    aliases = _aliases_by_model(session, owner)
    items = [model_out(m, aliases.get(m.id)) for m in rows]
    return ModelList(items=items, total=total, limit=limit, offset=offset)


@router.get("/{model_id}", response_model=ModelOut, summary="Read a model", responses=NO_MODEL_404)
def read_model(model_id: ModelIdPath, session: SessionDep, owner: OwnerDep) -> ModelOut:
    """The model's job, tag, step, resolution and class names."""
    model = owned_model(session, owner, model_id)
    return model_out(model, [a.alias for a in list_aliases(session, owner, model.id)])


@router.get(
    "/{model_id}/samples",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "a PNG grid of n images of the class"},
        304: {"description": "If-None-Match matched the ETag"},
        400: error("class, n, seed or truncation out of range, or a NUL byte; `detail` says which"),
        **NO_MODEL_404,
        **UNREADABLE_503,
    },
    summary="Sample a model: a PNG grid of one class",
)
def model_samples(
    model_id: ModelIdPath,
    session: SessionDep,
    owner: OwnerDep,
    services: ServicesDep,
    class_: Annotated[str, Query(alias="class", description="class index (0-based) or class name")],
    n: Annotated[
        int, Query(description="images in the grid, 1 to SAGAN_MAX_SAMPLES_PER_REQUEST (256)")
    ] = 16,
    seed: Annotated[int, Query(description="noise seed, 0 to 4294967295")] = 0,
    truncation: Annotated[
        float | None,
        Query(
            description="keep |z| <= truncation (1.0: more typical images, less variety; it hides "
            "a collapsing generator); default: no truncation"
        ),
    ] = None,
    if_none_match: Annotated[
        str | None, Header(description="the ETag of the PNG you have: `304` if unchanged")
    ] = None,
) -> Response:
    """The same model checkpoint and query (class, n, seed, truncation) give the same bytes."""
    model = owned_model(session, owner, model_id)
    try:
        class_index = resolve_class(class_, model.class_names)
        check_sample_query(n, seed, truncation, services.settings.max_samples_per_request)
    except (ClassError, SampleRequestError) as e:
        raise HTTPException(400, str(e)) from e
    key, step = model.checkpoint_key, model.step
    session.close()  # rendering can take seconds: give the connection back first
    return _png_response(
        model_id,
        step,
        sample_etag(key, class_index, n, seed, truncation),
        if_none_match,
        lambda: services.renderer.render(key, services.storage, class_index, n, seed, truncation),
    )


@router.get(
    "/{model_id}/attention",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "the sample and its attention map"},
        304: {"description": "If-None-Match matched the ETag"},
        400: error(
            "class, seed, truncation, x or y out of range, or a NUL byte; `detail` says which"
        ),
        **NO_MODEL_404,
        **UNREADABLE_503,
    },
    summary="Where a model's self-attention looks from one pixel",
)
def model_attention(
    model_id: ModelIdPath,
    session: SessionDep,
    owner: OwnerDep,
    services: ServicesDep,
    class_: Annotated[str, Query(alias="class", description="class index (0-based) or class name")],
    x: Annotated[int, Query(description="query pixel column, 0-based")],
    y: Annotated[int, Query(description="query pixel row, 0-based")],
    seed: Annotated[int, Query(description="noise seed, as in /samples")] = 0,
    truncation: Annotated[
        float | None,
        Query(
            description="keep |z| <= truncation (1.0: more typical images, less variety; it hides "
            "a collapsing generator); default: no truncation"
        ),
    ] = None,
    if_none_match: Annotated[
        str | None, Header(description="the ETag of the PNG you have: `304` if unchanged")
    ] = None,
) -> Response:
    """Where G's self-attention looks from pixel (x, y) of the image (class, seed) addresses:
    the image (query marked red) beside the attention weights over the image, brighter = more.
    The image is the first of `/samples` for the same class, seed and truncation."""
    model = owned_model(session, owner, model_id)
    try:
        class_index = resolve_class(class_, model.class_names)
        check_sample_query(1, seed, truncation, services.settings.max_samples_per_request)
        check_query_pixel(x, y, model.resolution)
    except (ClassError, SampleRequestError) as e:
        raise HTTPException(400, str(e)) from e
    key, step = model.checkpoint_key, model.step
    session.close()
    return _png_response(
        model_id,
        step,
        attention_etag(key, class_index, seed, truncation, x, y),
        if_none_match,
        lambda: services.renderer.render_attention(
            key, services.storage, class_index, seed, truncation, x, y
        ),
    )


def _chunks(f: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    try:
        while chunk := f.read(size):
            yield chunk
    finally:
        f.close()


@router.get(
    "/{model_id}/checkpoint",
    response_model=None,
    responses={
        200: {
            "model": CheckpointUrl,
            "content": {"application/octet-stream": {}},
            "description": "local storage: the checkpoint file; S3 with redirect=false: "
            '{"url": ..., "expires_in": ...}',
        },
        307: {"description": "S3: a redirect to a presigned URL (`Location`)"},
        **NO_MODEL_404,
        **UNREADABLE_503,
    },
    summary="Download a model's checkpoint",
)
def download_checkpoint(
    model_id: ModelIdPath,
    session: SessionDep,
    owner: OwnerDep,
    services: ServicesDep,
    redirect: Annotated[
        bool,
        Query(description="S3: false answers the presigned URL as JSON instead of a `307`"),
    ] = True,
) -> Any:
    """The generator checkpoint the model points at: the file itself (local storage), or a
    presigned URL that lives SAGAN_CHECKPOINT_URL_SECONDS (S3): a `307` to it, or with
    `redirect=false` the URL as JSON."""
    model = owned_model(session, owner, model_id)
    key, filename = model.checkpoint_key, f"sagan-{model.job_id}-step{model.step:08d}.pt"
    session.close()  # a download can outlast the request's need for the database
    storage = services.storage
    url = storage.url(key, services.settings.checkpoint_url_seconds)
    if url is not None:
        if not storage.exists(key):
            raise HTTPException(503, f"checkpoint of model {model_id} is missing from storage")
        if redirect:
            return RedirectResponse(url, status_code=307)
        body = CheckpointUrl(url=url, expires_in=services.settings.checkpoint_url_seconds)
        return JSONResponse(body.model_dump())
    try:
        f = storage.open(key)
    except StorageError as e:
        raise unreadable(model_id, e) from e
    return StreamingResponse(
        _chunks(f),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
