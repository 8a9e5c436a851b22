"""What an operator watches, read from the database at scrape time: jobs by kind and state, the
queues (depth and the oldest job's wait), the workers alive, and each running job's progress.

From the rows every process shares, so any API process answers the same (api.prometheus renders
them); nothing here is counted in memory.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.jobs import CANCELLING, KINDS, QUEUED, RUNNING, STATES
from store.models import Job, Worker, utcnow
from store.queue import job_gpus
from store.settings import Settings


@dataclass(frozen=True)
class QueueFigures:
    jobs: int
    oldest_age_s: float  # 0 for an empty queue


@dataclass(frozen=True)
class RunningJob:
    id: str
    kind: str
    step: int
    images_per_s: float | None
    heartbeat_age_s: float | None  # None before its first beat
    attempts: int


@dataclass(frozen=True)
class Fleet:
    jobs: dict[tuple[str, str], int]  # (kind, state) -> jobs, every pair (0 included)
    queues: dict[str, QueueFigures]  # every queue the deployment has (0 included)
    workers_alive: dict[str, int]  # queue -> live worker processes consuming it
    worker_heartbeat_age_s: dict[str, float]  # live worker (host:pid) -> seconds since its beat
    running: list[RunningJob]


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # SQLite returns naive UTC


def _age(now: datetime, t: datetime | None) -> float | None:
    return None if t is None else max(0.0, (now - _aware(t)).total_seconds())


def queue_of(settings: Settings, kind: str, config: dict) -> str:
    """The Celery queue a job's task goes to (store.queue.enqueue_job's choice)."""
    return settings.pack_queue if kind == "pack" else settings.queue_for(job_gpus(config))


def read_fleet(session: Session, settings: Settings) -> Fleet:
    now = utcnow()
    counts = {(k, s): 0 for k in KINDS for s in STATES}
    for kind, state, n in session.execute(
        select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
    ):
        counts[(kind, state)] = n

    # A queued job waits since it last entered the queue (created, or handed back after a loss).
    every_queue = dict.fromkeys([*settings.all_queues(), settings.pack_queue])
    waiting: dict[str, list[float]] = {q: [] for q in every_queue}
    for kind, config, updated in session.execute(
        select(Job.kind, Job.config, Job.updated_at).where(Job.state == QUEUED)
    ):
        waiting.setdefault(queue_of(settings, kind, config), []).append(_age(now, updated) or 0.0)
    queues = {q: QueueFigures(len(ages), max(ages, default=0.0)) for q, ages in waiting.items()}

    window = timedelta(seconds=settings.stale_after_seconds)
    alive = Counter(dict.fromkeys(every_queue, 0))
    beats = {}
    for name, queue, beat in session.execute(
        select(Worker.name, Worker.queue, Worker.heartbeat_at).where(
            Worker.heartbeat_at >= now - window
        )
    ):
        beats[name] = _age(now, beat) or 0.0
        alive.update(q for q in (queue or "").split(",") if q)

    running = [
        RunningJob(id_, kind, step or 0, rate, _age(now, beat), attempts or 0)
        for id_, kind, step, rate, beat, attempts in session.execute(
            select(
                Job.id, Job.kind, Job.step, Job.images_per_s, Job.heartbeat_at, Job.attempts
            ).where(Job.state.in_((RUNNING, CANCELLING)))
        )
    ]
    return Fleet(counts, queues, dict(alive), beats, running)
