"""The worker's Celery app: store.queue's app with the train, evaluate and pack tasks registered.

Run one worker process per GPU, one task at a time (`-c 1`, pool solo; pin the GPU with
CUDA_VISIBLE_DEVICES): `sagan worker` or `celery -A worker.celery_app worker -c 1 -P solo -Q train`.
Late acks, prefetch 1 and reject-on-worker-lost come from store.queue.make_celery.
"""

from __future__ import annotations

import logging
import os
import sys

from celery import signals
from celery.utils.log import get_multiprocessing_logger

from store.log_format import JsonFormatter, configure_logging, job_context, reformat
from store.queue import EVALUATE_TASK, PACK_TASK, TRAIN_TASK, celery_for, enqueue_job
from store.settings import get_settings
from worker import job_life, metrics_port, tasks
from worker.callbacks import worker_shutting_down
from worker.datasets import pack_job
from worker.liveness import ProcessLiveness

# A worker process serves one deployment: the settings its environment gives when it starts.
settings = get_settings()
app = celery_for(settings)
_liveness: ProcessLiveness | None = None


@signals.worker_ready.connect
def _start_beating(sender=None, **_: object) -> None:  # noqa: ANN001
    """The worker's own row in `workers` (readiness, operators) for as long as it runs."""
    global _liveness
    try:
        queues = ",".join(sorted(q.name for q in sender.app.amqp.queues.consume_from.values()))
    except AttributeError:  # another Celery version's sender
        queues = ""
    _liveness = ProcessLiveness(settings, job_life.worker_name(), queues or settings.train_queue)
    _liveness.start()
    metrics_port.serve(settings)  # SAGAN_WORKER_METRICS_PORT, when the operator set one


@signals.worker_shutdown.connect
def _stop_beating(**_: object) -> None:
    if _liveness is not None:
        _liveness.stop()


def _pass_on(job_id: str, kind: str, queue: str | None = None) -> bool:
    """A worker in warm shutdown still gets the message it prefetched: send it on, untouched,
    to the queue it came from."""
    if worker_shutting_down():
        enqueue_job(settings, job_id, kind, queue=queue)
        return True
    return False


def _queue_of(task) -> str | None:  # noqa: ANN001
    return (task.request.delivery_info or {}).get("routing_key")


# Each task's log records (and its heartbeat thread's) carry the job's id and this worker's name.
@app.task(name=TRAIN_TASK, ignore_result=True, bind=True)
def train(self, job_id: str) -> str | None:  # noqa: ANN001
    with job_context(job_id, job_life.worker_name()):
        if _pass_on(job_id, "train", _queue_of(self)):
            return None
        return tasks.train_job(job_id, settings)


@app.task(name=EVALUATE_TASK, ignore_result=True)
def evaluate(job_id: str) -> str | None:
    with job_context(job_id, job_life.worker_name()):
        return None if _pass_on(job_id, "evaluate") else tasks.evaluate_job(job_id, settings)


@app.task(name=PACK_TASK, ignore_result=True)
def pack(job_id: str) -> str | None:
    with job_context(job_id, job_life.worker_name()):
        return None if _pass_on(job_id, "pack") else pack_job(job_id, settings)


# Logging (SAGAN_LOG_FORMAT): the app keeps Celery off the root logger (worker_hijack_root_logger
# is off), so the root logger gets ours; Celery's own handlers (its task logger, billiard's) get
# our format. Under json, what Celery prints rather than logs: its banner is off (as with
# `celery -q worker`), and its signal handlers' lines ("worker: Warm shutdown") are JSON too.
@signals.celeryd_init.connect
def _json_console(instance=None, **_: object) -> None:  # noqa: ANN001
    if settings.log_format == "json":
        from celery.apps import worker as celery_worker

        if instance is not None:
            instance.quiet = True
        celery_worker.safe_say = _say_json


def _say_json(msg: str, f=sys.__stderr__) -> None:  # noqa: ANN001
    """celery.apps.worker.safe_say, one JSON line: a raw write, as it runs in signal handlers."""
    record = logging.LogRecord("celery.apps.worker", logging.INFO, __file__, 0, msg, None, None)
    try:
        os.write(f.fileno(), (JsonFormatter().format(record) + "\n").encode())
    except (OSError, AttributeError, ValueError):  # no console: the line is lost, as Celery's
        pass


@signals.after_setup_logger.connect
def _format_root(logger=None, **_: object) -> None:  # noqa: ANN001
    reformat(settings.log_format, logger, get_multiprocessing_logger())


@signals.after_setup_task_logger.connect
def _format_task_logger(logger=None, **_: object) -> None:  # noqa: ANN001
    reformat(settings.log_format, logger)


configure_logging(settings.log_format, logging.INFO)
