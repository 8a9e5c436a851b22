"""What handlers need, as annotated types: settings, a database session, storage, the caller."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from store.settings import Settings, get_settings
from store.storage import Storage, storage_from_settings

if TYPE_CHECKING:
    from celery import Celery

    from api.sampling import SampleRenderer

# Integer query parameters are bound into SQL: those compared with INTEGER columns (steps,
# event ids) must fit 32 bits on PostgreSQL, offsets a signed 64-bit value.
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
OWNER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


class Services:
    """The app's connections, made on first use (create_app itself touches nothing).

    With the process-wide settings the store's cached engine and Celery app are shared, so the API
    and store functions called in the same process talk to one database and one broker.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._sessionmaker: sessionmaker[Session] | None = None
        self._storage: Storage | None = None
        self._celery: Celery | None = None
        self._renderer: SampleRenderer | None = None

    def _is_global(self) -> bool:
        return self.settings is get_settings()

    @property
    def sessionmaker(self) -> sessionmaker[Session]:
        with self._lock:
            if self._sessionmaker is None:
                from store.db import get_sessionmaker, make_engine

                if self._is_global():
                    self._sessionmaker = get_sessionmaker()
                else:
                    engine = make_engine(self.settings.resolved_database_url())
                    self._sessionmaker = sessionmaker(bind=engine, expire_on_commit=False)
            return self._sessionmaker

    @property
    def storage(self) -> Storage:
        with self._lock:
            if self._storage is None:
                self._storage = storage_from_settings(self.settings)
            return self._storage

    @property
    def celery(self) -> Celery:
        with self._lock:
            if self._celery is None:
                from store.queue import get_celery, make_celery

                self._celery = get_celery() if self._is_global() else make_celery(self.settings)
            return self._celery

    @property
    def renderer(self) -> SampleRenderer:
        with self._lock:
            if self._renderer is None:
                from api.sampling import SampleRenderer

                self._renderer = SampleRenderer(self.settings)
            return self._renderer


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_app_settings(request: Request) -> Settings:
    return get_services(request).settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; handlers commit what they change, the rest is rolled back."""
    session = get_services(request).sessionmaker()
    try:
        yield session
    finally:
        session.close()


def get_storage(request: Request) -> Storage:
    return get_services(request).storage


def get_owner(x_user: Annotated[str | None, Header()] = None) -> str:
    """The caller. For now the X-User header (default "local"); API tokens will replace this."""
    owner = (x_user or "").strip() or "local"
    if not OWNER_RE.match(owner):
        raise HTTPException(
            400,
            f"X-User: must be 1-128 letters, digits or '_.@-', starting with a letter or digit "
            f"(got {owner[:40]!r})",
        )
    return owner


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
OwnerDep = Annotated[str, Depends(get_owner)]
