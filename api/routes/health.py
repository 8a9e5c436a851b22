"""Liveness (the process answers) and readiness (database, broker and storage answer, and in the
embedded mode a worker is alive)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import Services, ServicesDep
from api.errors import NOT_READY_503, NUL_400
from api.schemas import Readiness
from store.queue import BROKER_TIMEOUT_S
from store.workers import live_workers

router = APIRouter(tags=["health"], responses=NUL_400)


def _check_database(services: Services) -> None:
    with services.sessionmaker() as session:
        session.execute(text("SELECT 1"))


def _check_broker(services: Services) -> None:
    settings = services.settings
    celery = services.celery  # embedded: creating the app creates the broker folders
    if settings.is_embedded_broker():
        folder = settings.broker_dir() / "queue"
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise RuntimeError(f"broker folder {folder} is missing or not writable")
        return
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)
        conn.default_channel  # noqa: B018 - opening a channel talks to the server


def _check_storage(services: Services) -> None:
    services.storage.check()


def _check_worker(services: Services) -> None:
    settings = services.settings
    # A live worker beats every heartbeat_seconds: three missed beats mean it is gone.
    window = min(settings.stale_after_seconds, 3 * settings.heartbeat_seconds)
    with services.sessionmaker() as session:
        alive = live_workers(session, timedelta(seconds=window))
    # A worker of the pack queue alone (sagan up runs one beside the training worker) trains no job.
    training = [w for w in alive if settings.train_queue in (w.queue or "").split(",")]
    if not training:
        raise RuntimeError(
            f"no worker of the {settings.train_queue!r} queue has reported in the last "
            f"{window:.0f} s; jobs wait in the queue until one runs"
        )


def _describe(e: Exception) -> str:
    """The first line of the underlying error: SQLAlchemy wraps the driver's in `.orig`."""
    cause = getattr(e, "orig", None) or e
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first}"[:300]


CHECKS: dict[str, Callable[[Services], None]] = {
    "database": _check_database,
    "broker": _check_broker,
    "storage": _check_storage,
}
# Checked where the settings say a worker belongs to the service (the embedded `sagan up`).
WORKER_CHECK = "worker"


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always `{"status": "ok"}`; no token needed, nothing else is asked."""
    # On the loop, no thread hop: a liveness probe must not queue for the GIL behind busy threads.
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: the database, broker and storage answer",
    responses=NOT_READY_503,
)
def readyz(services: ServicesDep) -> Readiness | JSONResponse:
    """`200` when every backend answers (and, in the embedded mode, a worker has reported
    recently); `503` naming what is down otherwise. No token needed."""
    checks: dict[str, str] = {}
    wanted = dict(CHECKS)
    if services.settings.readiness_needs_worker():
        wanted[WORKER_CHECK] = _check_worker
    for name, check in wanted.items():
        try:
            check(services)
            checks[name] = "ok"
        except Exception as e:  # a readiness probe reports every failure, whatever its type
            checks[name] = _describe(e)
    down = [name for name, result in checks.items() if result != "ok"]
    if down:
        detail = "not ready: " + "; ".join(f"{name} is down ({checks[name]})" for name in down)
        return JSONResponse(
            {"detail": detail, "status": "unavailable", "checks": checks}, status_code=503
        )
    return Readiness(status="ok", checks=checks)
