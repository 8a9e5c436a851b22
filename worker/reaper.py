"""The reaper: jobs whose worker stopped heartbeating go back to the queue (and resume there)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import select

from store import jobs
from store.db import session_scope
from store.models import Job
from store.queue import enqueue_job
from store.settings import Settings

log = logging.getLogger(__name__)


def reap_stale(settings: Settings) -> list[str]:
    """Requeue running jobs silent for settings.stale_after_seconds; returns the requeued ids."""
    with session_scope(settings) as session:
        requeued = jobs.requeue_stale(session, timedelta(seconds=settings.stale_after_seconds))
        kinds = (
            dict(session.execute(select(Job.id, Job.kind).where(Job.id.in_(requeued))).all())
            if requeued
            else {}
        )
    for job_id in requeued:  # after the commit: the task must find the row queued
        enqueue_job(settings, job_id, kinds[job_id])
        log.warning("job %s: worker stopped heartbeating; requeued", job_id)
    return requeued


def start_reaper_thread(
    settings: Settings, interval_s: float = 60.0
) -> tuple[threading.Thread, threading.Event]:
    """Run reap_stale now and every interval_s in a daemon thread until the event is set."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                reap_stale(settings)
            except Exception:  # a database hiccup must not end the loop
                log.exception("reaper pass failed")
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=loop, name="sagan-reaper", daemon=True)
    thread.start()
    return thread, stop
