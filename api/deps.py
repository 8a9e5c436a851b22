"""What handlers need, as annotated types: settings, a database session, storage, the caller."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from store.db import sessionmaker_for
from store.queue import celery_for
from store.settings import Settings
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
    """The app's connections, made on first use from the settings it was given (create_app itself
    touches nothing). Engines and Celery apps are shared per URL within a process (store.db,
    store.queue), so handlers and store functions in one process use one pool."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._storage: Storage | None = None
        self._renderer: SampleRenderer | None = None

    @property
    def sessionmaker(self) -> sessionmaker[Session]:
        return sessionmaker_for(self.settings.resolved_database_url())

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
