"""Database engine and sessions for PostgreSQL and SQLite, keyed by the URL they are given."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from store.settings import Settings


class Base(DeclarativeBase):
    pass


_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    # A forked child (a prefork Celery worker's replacement child) inherits its parent's pooled
    # connections; two processes on one socket corrupt the protocol ("consuming input failed",
    # "connection in transaction status INTRANS"). The child starts new pools and leaves the
    # parent's connections open, for the parent (SQLAlchemy: "Using Connection Pools with
    # Multiprocessing or os.fork()").
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    engine = _new_engine(url, pool_size, max_overflow)
    _ENGINES.add(engine)
    return engine


def _new_engine(url: str, pool_size: int, max_overflow: int) -> Engine:
    """An engine for the URL. Blocking: the API uses it from its thread pool only, never on its
    event loop (#24: a round trip there held up every request). The pool's sizes are
    PostgreSQL's (SQLite's file connections are cheap: its default pool)."""
    if url.startswith("sqlite"):
        busy_s = 30
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_s})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            # WAL lets the API read while the worker writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={busy_s * 1000}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # pre_ping: a connection the server dropped (restart, pg_terminate_backend) is replaced before
    # use. 10 + 20 connections (the default) serve the API's thread pool under load without
    # opening and closing overflow connections on every burst.
    engine = create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)

    @event.listens_for(engine, "handle_error")
    def _broken_ping_is_a_disconnect(context) -> None:  # noqa: ANN001
        # psycopg leaves a connection whose socket closed under a query in status ACTIVE, and
        # SQLAlchemy's pre-ping then fails restoring autocommit on it with a ProgrammingError it
        # does not read as a disconnect: a 500 in a database kill storm (#24). Replace it instead.
        if context.is_pre_ping and "connection in transaction status" in str(
            context.original_exception
        ):
            context.is_disconnect = True

    return engine


@lru_cache
def engine_for(url: str, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """One engine (one connection pool) per database URL and process, and one more per other
    pool size asked for (the API's metric reads have a pool of their own: api.deps.Services)."""
    return make_engine(url, pool_size, max_overflow)


@lru_cache
def sessionmaker_for(
    url: str, pool_size: int = 10, max_overflow: int = 20
) -> sessionmaker[Session]:
    return sessionmaker(bind=engine_for(url, pool_size, max_overflow), expire_on_commit=False)


@lru_cache
def read_sessionmaker_for(
    url: str, pool_size: int = 10, max_overflow: int = 20
) -> sessionmaker[Session]:
    """Sessions for reads alone, on the same pool: each statement is its own transaction, so a
    read costs no BEGIN and no ROLLBACK, two of a short read's four round trips to PostgreSQL
    (#24: under load each round trip waits for a busy CPU). Under PostgreSQL's READ COMMITTED
    each statement saw a snapshot of its own anyway."""
    engine = engine_for(url, pool_size, max_overflow)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    return sessionmaker(bind=autocommit, expire_on_commit=False)


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A session on the settings' database that commits on success and rolls back on error."""
    session = sessionmaker_for(settings.resolved_database_url())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
