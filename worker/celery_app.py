"""The worker's Celery app: store.queue's app with the train, evaluate and pack tasks registered.

Run one worker process per GPU, one task at a time (`-c 1`, pool solo; pin the GPU with
CUDA_VISIBLE_DEVICES): `sagan worker` or `celery -A worker.celery_app worker -c 1 -P solo -Q train`.
Late acks, prefetch 1 and reject-on-worker-lost come from store.queue.make_celery.
"""

from __future__ import annotations

import logging

from celery import signals

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


@app.task(name=TRAIN_TASK, ignore_result=True, bind=True)
def train(self, job_id: str) -> str | None:  # noqa: ANN001
    return None if _pass_on(job_id, "train", _queue_of(self)) else tasks.train_job(job_id, settings)


@app.task(name=EVALUATE_TASK, ignore_result=True)
def evaluate(job_id: str) -> str | None:
    return None if _pass_on(job_id, "evaluate") else tasks.evaluate_job(job_id, settings)


@app.task(name=PACK_TASK, ignore_result=True)
def pack(job_id: str) -> str | None:
    return None if _pass_on(job_id, "pack") else pack_job(job_id, settings)


if not logging.getLogger().handlers:  # the app keeps Celery off the root logger; give ours one
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s %(levelname)s %(name)s] %(message)s"
    )
