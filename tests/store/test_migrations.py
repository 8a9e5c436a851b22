from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from store.migrate import downgrade, upgrade

TABLES = {
    "jobs", "job_events", "metrics", "checkpoints", "models", "workers", "api_tokens", "datasets",
    "score_protocols", "model_aliases", "sweeps",
}  # fmt: skip


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_upgrade_and_downgrade_on_empty_sqlite(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'sagan.db'}"
    upgrade(url)
    assert _tables(url) == TABLES
    downgrade(url)
    assert _tables(url) == set()


def test_migrations_upgrade_and_downgrade_on_empty_postgres(empty_postgres_url: str):
    postgres_url = empty_postgres_url
    assert _tables(postgres_url) == set()
    upgrade(postgres_url)
    assert _tables(postgres_url) == TABLES
    downgrade(postgres_url)
    assert _tables(postgres_url) == set()


def _drift(url: str, metadata) -> list:  # noqa: ANN001
    """What Alembic's autogenerate would write to bring the migrated database to `metadata`."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_migrations_build_exactly_the_orm_tables(backend: str, tmp_path: Path, request):
    from sqlalchemy import Column, Integer, MetaData

    from store.models import Base

    url = (
        f"sqlite:///{tmp_path / 'orm.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("empty_postgres_url")
    )
    upgrade(url)
    assert _drift(url, Base.metadata) == []
    # the check sees drift: a column the ORM has and no migration made
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["jobs"].append_column(Column("priority", Integer))
    added = [d for d in _drift(url, changed) if d[0] == "add_column"]
    assert [(d[2], d[3].name) for d in added] == [("jobs", "priority")]
