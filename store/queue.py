"""The Celery app as both sides see it: the API sends job ids, the worker registers the tasks."""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy.orm import Session

from store.jobs import add_event
from store.models import Job
from store.settings import Settings

log = logging.getLogger(__name__)

TRAIN_TASK = "sagan.train"
EVALUATE_TASK = "sagan.evaluate"
PACK_TASK = "sagan.pack"
TASK_FOR_KIND = {"train": TRAIN_TASK, "evaluate": EVALUATE_TASK, "pack": PACK_TASK}
BROKER_TIMEOUT_S = 3  # a broker that is down answers nothing; callers must not hang on it


def make_celery(settings: Settings) -> Celery:
    app = Celery("sagan", broker=settings.resolved_broker_url())
    conf: dict = dict(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.train_queue,
        task_ignore_result=True,  # the database is the source of truth, no result backend
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=BROKER_TIMEOUT_S,
        # A send while the broker is down fails in about a second; the job stays queued in the
        # database and the dispatcher sends it later (the database is the outbox).
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 0.5,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # Flower shows tasks
        task_send_sent_event=True,
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
        # An unacked message (its worker died) is delivered again after this. Recovery does not
        # wait for it: the reaper requeues a job within a stale window and the dispatcher re-sends
        # it. A redelivery while the job runs is harmless (the claim sees a live owner and drops
        # it), so an hour only bounds how long a lost message waits when no reaper runs at all.
        conf["broker_transport_options"] = {
            "visibility_timeout": 3600,
            "socket_connect_timeout": BROKER_TIMEOUT_S,
        }
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


def job_gpus(config: dict | None) -> int:
    """GPUs a job's config asks for (1 for evaluations, packs and configs from before #15)."""
    value = (config or {}).get("gpus", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1


def enqueue_job(
    settings: Settings, job_id: str, kind: str, gpus: int = 1, queue: str | None = None
) -> None:
    """Send the job's task (its id only) to `queue`, else to the pack queue (a pack job) or the
    queue of jobs of `gpus` GPUs."""
    queue = queue or (settings.pack_queue if kind == "pack" else settings.queue_for(gpus))
    celery_for(settings).send_task(TASK_FOR_KIND[kind], args=[job_id], queue=queue)


def send_or_note(
    settings: Settings, job_id: str, kind: str, gpus: int = 1, queue: str | None = None
) -> Exception | None:
    """Send the job's task; a broker that is down is not an error (the job stays queued in the
    database, the outbox, and the dispatcher sends it once the broker is back). Returns what the
    broker raised, for the caller to note on the job, or None when the task was sent."""
    try:
        enqueue_job(settings, job_id, kind, gpus, queue=queue)
    except Exception as e:  # kombu/redis raise many types; any of them means "not sent yet"
        log.warning(
            "job %s: broker unavailable (%s); the dispatcher will send it",
            job_id,
            e,
            extra={"job_id": job_id},  # (the API's line carries the job's id under JSON logs)
        )
        return e
    return None


def send_job(session: Session, settings: Settings, job: Job) -> None:
    """Send a committed job's task; if the broker is down the job stays queued (the dispatcher
    sends it later) and its events say so."""
    error = send_or_note(settings, job.id, job.kind, job_gpus(job.config))
    if error is not None:
        note = f"the broker was unavailable ({type(error).__name__}); sent when it is back"
        add_event(session, job.id, "info", note)
        session.commit()


def queue_length(settings: Settings) -> int:
    """Messages waiting in the training queues (not those a worker is running)."""
    with celery_for(settings).connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_S)
        return sum(
            conn.default_channel.queue_declare(
                queue=queue, durable=True, auto_delete=False
            ).message_count
            for queue in settings.all_queues()
        )
