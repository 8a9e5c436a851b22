"""What handlers need, as annotated types: settings, a database session, storage, the caller
(an identity resolved from its bearer token)."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

import anyio
from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api.response_cache import ResponseCache
from api.token_cache import TokenCache
from store.db import read_sessionmaker_for, sessionmaker_for
from store.queue import celery_for
from store.settings import Settings
from store.storage import Storage, storage_from_settings
from store.tokens import Identity, identify

if TYPE_CHECKING:
    from celery import Celery

    from api.sampling import SampleRenderer

# Integer query parameters are bound into SQL: those compared with INTEGER columns (steps,
# event ids) must fit 32 bits on PostgreSQL, offsets a signed 64-bit value.
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
# GET /jobs/<id>/metrics requests at work at once in an API process (#24); the others wait for a
# slot, behind each other, at no cost to the other routes: api.routes.job_metrics. One, not two:
# under 20 wrk readers a second slot's thread only contends for the GIL with the loop and the
# other routes' threads (585 reads/s at 1.67 ms of API CPU each, GET /jobs/<id> p99 x4.8 of
# idle; with one, 637/s at 1.41 ms, every route within x1.6).
METRIC_READ_SLOTS = 1

log = logging.getLogger(__name__)


class Services:
    """The app's connections, made on first use from the settings it was given (create_app itself
    touches nothing). Engines and Celery apps are shared per URL within a process (store.db,
    store.queue), so handlers and store functions in one process use one pool."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._storage: Storage | None = None
        self._renderer: SampleRenderer | None = None
        self.metrics_cache = ResponseCache()
        self.tokens = TokenCache(settings.token_cache_seconds)
        self.metric_reads = anyio.CapacityLimiter(METRIC_READ_SLOTS)

    @property
    def sessionmaker(self) -> sessionmaker[Session]:
        return sessionmaker_for(self.settings.resolved_database_url())

    @property
    def read_sessionmaker(self) -> sessionmaker[Session]:
        """Sessions for handlers that only read, on the same pool, with no transaction around
        their statements (store.db.read_sessionmaker_for): the routes a dashboard polls."""
        return read_sessionmaker_for(self.settings.resolved_database_url())

    # Token lookups and metric reads have pools of their own (#9): neither waits for a connection
    # the other handlers hold, nor holds one those handlers wait for.

    @property
    def token_sessionmaker(self) -> sessionmaker[Session]:
        """Sessions for the token lookups (get_identity): short, one indexed SELECT each."""
        return sessionmaker_for(self.settings.resolved_database_url(), 2, 2)

    @property
    def metric_sessionmaker(self) -> sessionmaker[Session]:
        """Sessions for the metric reads: a connection per slot (METRIC_READ_SLOTS)."""
        url = self.settings.resolved_database_url()
        return read_sessionmaker_for(url, METRIC_READ_SLOTS, 0)

    @property
    def storage(self) -> Storage:
        with self._lock:
            if self._storage is None:
                self._storage = storage_from_settings(self.settings)
            return self._storage

    @property
    def celery(self) -> Celery:
        return celery_for(self.settings)

    @property
    def renderer(self) -> SampleRenderer:
        with self._lock:
            if self._renderer is None:
                from api.sampling import SampleRenderer

                self._renderer = SampleRenderer(self.settings)
            return self._renderer


# The trivial dependencies are async: FastAPI runs a sync one in the thread pool, one hop each per
# request, which under load costs more than the work (#9, metric reads at 20 clients).
async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request; handlers commit what they change, the rest is rolled back.

    Made on the loop (a session connects on its first query, in the handler's thread), so a
    request takes no thread hop to open it: under load every hop waits for the GIL behind the
    busy threads (#24). Closed in the thread pool (a rollback is a round trip to the database),
    after the answer is sent (a yield dependency's exit)."""
    session = request.app.state.services.sessionmaker()
    try:
        yield session
    finally:
        await run_in_threadpool(_close, session)


def _close(session: Session) -> None:
    try:
        session.close()
    except Exception as e:  # a connection killed under the request: drop it, not the answer
        log.warning("closing a request's session: %r", e)
        session.invalidate()


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token: `sagan token create --user NAME` prints one (shown once).",
)
LOCAL_USER = Identity("local")  # everyone, when the operator turned auth off (127.0.0.1 only)


async def get_identity(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Identity:
    """The caller, from `Authorization: Bearer <token>`; 401 without a valid, unrevoked one.

    One indexed SELECT, and a write of last_used_at at most once a minute, in the thread pool,
    in a session of the lookups' own pool; then trusted for SAGAN_TOKEN_CACHE_SECONDS
    (api.token_cache: under load the lookup was three of GET /jobs' seven round trips and a
    thread hop). It ran on the event loop (#9: a thread hop cost more than the work), where its
    round trips to the database held up every other request (#24: under 20 metric readers the
    loop spent 60% of its time waiting for PostgreSQL, and GET /jobs' p99 went from tens of
    milliseconds to seconds)."""
    services = request.app.state.services
    settings = services.settings
    if not settings.auth:
        return LOCAL_USER
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(
            401,
            "authentication required: send `Authorization: Bearer <token>` "
            "(an operator creates one with `sagan token create --user NAME`)",
            headers=challenge,
        )
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None
    token = credentials.credentials
    identity = services.tokens.get(token)
    if identity is None:
        identity = await run_in_threadpool(_identify, services, token, admin)
        if identity is not None:
            services.tokens.put(token, identity)
    if identity is None:
        raise HTTPException(401, "invalid or revoked token", headers=challenge)
    return identity


def _identify(services: Services, token: str, admin: str | None) -> Identity | None:
    with services.token_sessionmaker() as session:
        return identify(session, token, admin)


async def get_owner(identity: Annotated[Identity, Depends(get_identity)]) -> str:
    """The owner of what the caller creates and the only one whose resources it can read."""
    return identity.user


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]
IdentityDep = Annotated[Identity, Depends(get_identity)]
OwnerDep = Annotated[str, Depends(get_owner)]
