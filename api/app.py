"""The FastAPI application: `create_app()` builds it (uvicorn --factory api.app:create_app)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from api.config_schema import document_train_config
from api.deps import Services
from api.errors import OUTAGE_RETRY_AFTER_S, SHOWN_FIELD_CHARS, InvalidField, encodable
from api.limits import BodySizeLimit, RejectNulBytes, nul_in_stored_text
from api.prometheus import RequestMetrics
from api.routes import (
    aliases,
    dashboard,
    datasets,
    defaults,
    health,
    jobs,
    models,
    operations,
    sweeps,
)
from sagan_core.config import shown
from store.aliases import AliasNotFound
from store.checkpoints import ModelNotFound
from store.datasets import DatasetNotFound
from store.jobs import InvalidTransition, JobNotFound, QuotaExceeded
from store.outages import is_outage
from store.settings import Settings, get_settings
from store.storage import StorageError
from store.sweeps import SweepNotFound

log = logging.getLogger(__name__)
LOCATIONS = ("body", "query", "path", "header", "cookie")


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] in LOCATIONS:
        parts = parts[1:]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    if len(out) > SHOWN_FIELD_CHARS:  # an unknown key of 100,000 characters is not echoed whole
        out = out[:SHOWN_FIELD_CHARS] + "..."
    return out or "request body"


def _readable(error: dict[str, Any]) -> str:
    """One pydantic error as `field: problem (got value)`."""
    field = _field(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return f"request body: invalid JSON ({reason})" if reason else "request body: invalid JSON"
    msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "missing":
        return f"{field}: required"
    if "input" in error and error["type"] not in ("extra_forbidden",):
        got = shown(error["input"])  # 'text', null, true, [3]: JSON as sent, not Python's repr
        msg += f" (got {got[:80] + '...' if len(got) > 80 else got})"
    if error.get("type") == "extra_forbidden":
        msg = "unknown field"
    return f"{field}: {msg}"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    detail = encodable("; ".join(_readable(e) for e in errors))
    simple = [
        {
            "field": encodable(_field(e.get("loc", ()))),
            "message": encodable(_readable(e)),
            "type": e.get("type"),
        }
        for e in errors
    ]
    return JSONResponse({"detail": detail, "errors": simple}, status_code=422)


async def _invalid_field(request: Request, exc: InvalidField) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=422)


async def _job_not_found(request: Request, exc: JobNotFound) -> JSONResponse:
    return JSONResponse({"detail": f"job {exc.args[0]!r} not found"}, status_code=404)


async def _model_not_found(request: Request, exc: ModelNotFound) -> JSONResponse:
    return JSONResponse({"detail": f"model {exc.args[0]!r} not found"}, status_code=404)


async def _alias_not_found(request: Request, exc: AliasNotFound) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _sweep_not_found(request: Request, exc: SweepNotFound) -> JSONResponse:
    return JSONResponse({"detail": f"sweep {exc.args[0]!r} not found"}, status_code=404)


async def _dataset_not_found(request: Request, exc: DatasetNotFound) -> JSONResponse:
    return JSONResponse({"detail": f"dataset {exc.args[0][:64]!r} not found"}, status_code=404)


async def _quota_exceeded(request: Request, exc: QuotaExceeded) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=429)


async def _invalid_transition(request: Request, exc: InvalidTransition) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's answer, but a 405 names every method the path takes: Starlette's names only
    those of the first route that matched the path (one method per route here)."""
    if exc.status_code == 405:
        path = request.scope.get("path", "")
        allowed = {
            method.upper()
            for template, operations in request.app.openapi()["paths"].items()
            if compile_path(template)[0].fullmatch(path)
            for method in operations
        }
        if allowed:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
    return await http_exception_handler(request, exc)


def _outage_types() -> tuple[type[BaseException], ...]:
    """The exception types an outage raises: handled as exceptions of their own (not by the catch-
    all, which Starlette re-raises into the server's log after answering)."""
    import botocore.exceptions
    import kombu.exceptions
    import redis.exceptions
    import sqlalchemy.exc

    return (
        sqlalchemy.exc.SQLAlchemyError,
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
        kombu.exceptions.OperationalError,
        redis.exceptions.RedisError,
        StorageError,
        ConnectionError,
        TimeoutError,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if is_outage(exc):  # the database, storage or broker went away under the request: not a bug
        log.warning("%s %s: a service is unavailable: %r", request.method, request.url.path, exc)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return JSONResponse(
            {"detail": encodable(f"service unavailable ({type(exc).__name__}: {first}); retry")},
            status_code=503,
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_S)},
        )
    # Still a JSON body with a detail; the traceback goes to the server log.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    message = encodable(str(exc).strip().splitlines()[0][:300]) if str(exc).strip() else ""
    return JSONResponse(
        {"detail": f"internal error ({type(exc).__name__}){': ' + message if message else ''}"},
        status_code=500,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing connects until a request needs it."""
    app = FastAPI(
        title="SAGAN training service",
        summary="Train class-conditional Self-Attention GANs and sample the trained models.",
        version="0.1.0",
        # /docs and /redoc are served by api.routes.dashboard from vendored assets (no CDN).
        docs_url=None,
        redoc_url=None,
        openapi_tags=[
            {"name": "jobs", "description": "training and evaluation jobs"},
            {"name": "models", "description": "trained generators: samples, checkpoints"},
            {"name": "datasets", "description": "stored datasets: upload, pack, list, delete"},
            {"name": "sweeps", "description": "hyperparameter searches whose trials are jobs"},
            {"name": "health", "description": "liveness and readiness probes"},
            {"name": "operations", "description": "Prometheus metrics for operators"},
        ],
    )
    app.state.services = Services(settings or get_settings())
    document_train_config(app, app.state.services.settings.limits)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(InvalidField, _invalid_field)
    app.add_exception_handler(JobNotFound, _job_not_found)
    app.add_exception_handler(ModelNotFound, _model_not_found)
    app.add_exception_handler(AliasNotFound, _alias_not_found)
    app.add_exception_handler(DatasetNotFound, _dataset_not_found)
    app.add_exception_handler(SweepNotFound, _sweep_not_found)
    app.add_exception_handler(QuotaExceeded, _quota_exceeded)
    app.add_exception_handler(InvalidTransition, _invalid_transition)
    app.add_exception_handler(DataError, nul_in_stored_text)
    for outage in _outage_types():  # a 503 when it is one, else the catch-all's 500
        app.add_exception_handler(outage, _unexpected)
    app.add_exception_handler(Exception, _unexpected)
    # Outermost last: the body cap first, then NUL bytes; both answer before any route runs.
    app.add_middleware(RejectNulBytes)
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=app.state.services.settings.max_body_bytes,
        # a dataset upload streams to storage: its own, larger limit
        uploads={"/datasets": app.state.services.settings.max_dataset_bytes},
    )
    app.add_middleware(RequestMetrics)  # outermost: it counts the answers of the two above too
    app.include_router(health.router)
    app.include_router(defaults.router)  # before jobs: /jobs/defaults is not a job id
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(aliases.router)
    app.include_router(datasets.router)
    app.include_router(sweeps.router)
    app.include_router(operations.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC), name="static")
    return app
