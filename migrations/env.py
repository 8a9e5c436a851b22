"""Alembic environment: the URL is SAGAN_DATABASE_URL unless one is passed in."""

from alembic import context

import store.models  # noqa: F401  (registers the tables on Base.metadata)
from store.db import Base, make_engine
from store.settings import get_settings

config = context.config
url = (
    config.attributes.get("url")
    or context.get_x_argument(as_dictionary=True).get("url")
    or get_settings().resolved_database_url()
)


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        # batch mode lets later revisions alter SQLite tables too
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
