"""A database session at the head revision, on SQLite and on PostgreSQL in turn."""

from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from store.db import make_engine
from store.migrate import upgrade


@pytest.fixture(params=["sqlite", "postgres"])
def session(request, tmp_path: Path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("migrated_postgres_url")
    engine = make_engine(url)
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()
