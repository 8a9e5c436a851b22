"""The Celery app as both sides see it: the API sends job ids, the worker registers the tasks."""

from __future__ import annotations

from celery import Celery

from store.settings import Settings

TRAIN_TASK = "sagan.train"
EVALUATE_TASK = "sagan.evaluate"
TASK_FOR_KIND = {"train": TRAIN_TASK, "evaluate": EVALUATE_TASK}


def make_celery(settings: Settings) -> Celery:
    app = Celery("sagan", broker=settings.resolved_broker_url())
    conf: dict = dict(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.train_queue,
        task_ignore_result=True,  # the database is the source of truth, no result backend
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if settings.is_embedded_broker():
        folder = settings.broker_dir()
        (folder / "queue").mkdir(parents=True, exist_ok=True)
        (folder / "processed").mkdir(parents=True, exist_ok=True)
        (folder / "control").mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # kombu's default is ./control, relative to whatever directory the process started in
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    else:
        # Redelivery of an unacked task waits this long: longer than any checkpoint interval's worth
        # of training, so a slow job is not handed to a second worker while the first still runs.
        conf["broker_transport_options"] = {"visibility_timeout": 6 * 3600}
    app.conf.update(conf)
    return app


_apps: dict[tuple[str, str, str], Celery] = {}


def celery_for(settings: Settings) -> Celery:
    """One Celery app per broker (and queue) in a process: its connection pool is reused."""
    key = (settings.resolved_broker_url(), str(settings.broker_dir()), settings.train_queue)
    if key not in _apps:
        _apps[key] = make_celery(settings)
    return _apps[key]


celery_for.cache_clear = _apps.clear  # type: ignore[attr-defined]  # as store.reset_caches expects


def enqueue_job(settings: Settings, job_id: str, kind: str) -> None:
    """Send the job's task (its id only) to the settings' broker and training queue."""
    celery_for(settings).send_task(TASK_FOR_KIND[kind], args=[job_id], queue=settings.train_queue)
