from pathlib import Path

from sqlalchemy import create_engine, inspect

from store.migrate import downgrade, upgrade

TABLES = {
    "jobs", "job_events", "metrics", "checkpoints", "models", "workers", "api_tokens", "datasets",
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
