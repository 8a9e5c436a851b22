"""What the API and the worker share: settings, database, tables, job states, storage."""


def reset_caches() -> None:
    """Forget cached settings, engines and Celery apps; the next use re-reads SAGAN_* variables."""
    from store.db import engine_for, read_sessionmaker_for, sessionmaker_for
    from store.queue import celery_for
    from store.settings import get_settings

    for cached in (get_settings, engine_for, sessionmaker_for, read_sessionmaker_for, celery_for):
        cached.cache_clear()
