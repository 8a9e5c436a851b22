"""What the API and the worker share: settings, database, tables, job states, storage."""


def reset_caches() -> None:
    """Forget cached settings, engine and Celery app; the next use re-reads SAGAN_* variables."""
    from store.db import get_engine, get_sessionmaker
    from store.queue import get_celery
    from store.settings import get_settings

    for cached in (get_settings, get_engine, get_sessionmaker, get_celery):
        cached.cache_clear()
