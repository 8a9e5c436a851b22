"""A pooled PostgreSQL connection whose backend died under a query is replaced, not a 500 (#24).

psycopg leaves such a connection in transaction status ACTIVE; SQLAlchemy's pre-ping then fails
putting autocommit back with a ProgrammingError it does not read as a disconnect. A rehearsal's
database kill storm met it once (`GET /sweeps` answered 500); store.db reads it as one.
"""

from __future__ import annotations

import time

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from store.db import make_engine


def test_a_ping_of_a_connection_killed_under_a_query_says_reconnect(empty_postgres_url):
    engine = make_engine(empty_postgres_url)
    try:
        dsn = make_url(empty_postgres_url).set(drivername="postgresql").render_as_string(False)
        raw = psycopg.connect(dsn)
        raw.pgconn.send_query(b"SELECT pg_sleep(5)")  # a query under way: status ACTIVE
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": raw.info.backend_pid})
        time.sleep(0.3)
        # The pool's own pre-ping, as on a checkout: False means "replace this connection";
        # without store.db's handler it raised ProgrammingError (the 500).
        assert engine.dialect._do_ping_w_event(raw) is False
        raw.close()
    finally:
        engine.dispose()
