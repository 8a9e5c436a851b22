"""The reaper and the dispatcher: nothing stranded, whatever died.

- reap_stale: jobs whose worker stopped heartbeating lose it (requeued, or failed once their retry
  budget is spent) and are sent again.
- dispatch_unclaimed: the database is the outbox. A job queued for a while whose message the broker
  no longer holds (a Redis restart without persistence, a POST while the broker was down, a claim
  that failed) is sent again. Only when the training queue is empty: while messages wait, workers
  are busy and will reach them, and a full queue never grows with copies. A duplicate message
  costs nothing (claims are idempotent).

- advance_all (sweeps.driver): every running sweep is brought up to date (a trial that ended while
  its worker could not tell the sweep, a driver that died holding the lease).

All run in a thread of `sagan up` and `sagan api` every SAGAN_REAP_EVERY_SECONDS; several at once
are harmless (every transition is guarded).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import select

from store import jobs
from store.db import session_scope
from store.models import Job
from store.queue import job_gpus, queue_length, send_or_note
from store.settings import Settings
from store.workers import remove_worker
from sweeps.driver import advance_all

log = logging.getLogger(__name__)


def _send(settings: Settings, job_ids: list[str]) -> list[str]:
    """Send each job's task; returns those sent (a broker outage leaves the rest to a next pass)."""
    if not job_ids:
        return []
    with session_scope(settings) as session:
        rows = session.execute(select(Job.id, Job.kind, Job.config).where(Job.id.in_(job_ids)))
        kinds = {job_id: (kind, job_gpus(config)) for job_id, kind, config in rows}
    sent = []
    for job_id in job_ids:
        if send_or_note(settings, job_id, *kinds[job_id]) is not None:
            break  # the broker is down: the rest wait for the next round too
        sent.append(job_id)
    return sent


def reap_stale(settings: Settings) -> list[str]:
    """Requeue running jobs silent for settings.stale_after_seconds; returns the requeued ids."""
    with session_scope(settings) as session:
        requeued = jobs.requeue_stale(
            session,
            timedelta(seconds=settings.stale_after_seconds),
            max_attempts=settings.max_attempts,
        )
    for job_id in requeued:
        log.warning("job %s: worker stopped heartbeating; requeued", job_id)
    _send(settings, requeued)  # after the commit: the task must find the row queued
    return requeued


def requeue_jobs_of(settings: Settings, worker: str, reason: str) -> list[str]:
    """A supervisor saw `worker` die: its row goes and its jobs go back to the queue at once."""
    with session_scope(settings) as session:
        remove_worker(session, worker)
        requeued = jobs.requeue_jobs_of(session, worker, reason, settings.max_attempts)
    _send(settings, requeued)
    return requeued


def dispatch_unclaimed(settings: Settings) -> list[str]:
    """Send again the queued jobs nobody claimed, when the broker's queue is empty."""
    with session_scope(settings) as session:
        pending = jobs.unclaimed_queued(session, timedelta(seconds=settings.dispatch_after_seconds))
    if not pending:
        return []
    try:
        waiting = queue_length(settings)
    except Exception as e:
        log.warning("dispatcher: broker unavailable (%s); %d job(s) wait", e, len(pending))
        return []
    if waiting:
        return []
    sent = _send(settings, [job_id for job_id, _ in pending])
    if sent:
        log.warning("dispatcher: sent %d queued job(s) again (their messages were lost)", len(sent))
    return sent


def start_reaper_thread(
    settings: Settings, interval_s: float | None = None
) -> tuple[threading.Thread, threading.Event]:
    """Reap and dispatch now and every interval_s in a daemon thread until the event is set."""
    stop = threading.Event()
    interval = settings.reap_every_seconds if interval_s is None else interval_s

    def loop() -> None:
        while True:
            for task in (reap_stale, dispatch_unclaimed, advance_all):
                try:
                    task(settings)
                except Exception:  # a database hiccup must not end the loop
                    log.exception("%s failed", task.__name__)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=loop, name="sagan-reaper", daemon=True)
    thread.start()
    return thread, stop
