"""Heartbeats that do not depend on the training loop: a thread per task and one per process.

A task's thread beats its job row for the task's whole life (setup, the first FLOP-counted step,
evaluation, sample grids, uploads) and reads the job's state every second, so the loop learns of a
cancel or a takeover without a database call of its own. A database outage stops the beats, never
the task; the job goes stale only if the outage outlasts the stale window.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time

from store import jobs
from store.db import session_scope
from store.settings import Settings
from store.workers import beat_worker, remove_worker
from worker import metrics_port

log = logging.getLogger(__name__)
STATE_POLL_SECONDS = 1.0


class JobLiveness:
    """`with JobLiveness(settings, job_id, worker) as live:` beats the job until the block ends.

    The task updates `step` and `images_per_s`; `state` and `owner` are the job's as last read.
    """

    def __init__(self, settings: Settings, job_id: str, worker: str):
        self.settings, self.job_id, self.worker = settings, job_id, worker
        self.step: int | None = None
        self.images_per_s: float | None = None
        self.state: str = jobs.RUNNING
        self.owner: str | None = worker
        self._stop = threading.Event()
        # A copy of the task's context: the thread's log records carry the job id (store.log_format)
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._loop,),
            name=f"beat-{job_id}",
            daemon=True,
        )
        self._failing_since: float | None = None

    def __enter__(self) -> JobLiveness:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        metrics_port.forget(self.job_id)

    def lost(self) -> bool:
        """Another worker took the job over, or it left the running states without us."""
        return self.owner != self.worker or self.state not in (jobs.RUNNING, jobs.CANCELLING)

    def _loop(self) -> None:
        interval = max(self.settings.heartbeat_seconds, 0.1)
        poll = min(STATE_POLL_SECONDS, interval)
        last_beat = -float("inf")
        while True:
            now = time.monotonic()
            metrics_port.progress(self.job_id, self.step, self.images_per_s)
            try:
                with session_scope(self.settings) as session:
                    if now - last_beat >= interval:
                        jobs.heartbeat(
                            session,
                            self.job_id,
                            self.worker,
                            step=self.step,
                            images_per_s=self.images_per_s,
                        )
                        last_beat = now
                    status = jobs.job_status(session, self.job_id)
                if status is not None:
                    self.state, self.owner = status
                if self._failing_since is not None:
                    log.info("job %s: database reachable again; heartbeats resume", self.job_id)
                    self._failing_since = None
            except Exception as e:  # an outage: keep trying, the task decides what to do
                if self._failing_since is None:
                    self._failing_since = now
                    log.warning(
                        "job %s: heartbeat failed (%s: %s)", self.job_id, type(e).__name__, e
                    )
            if self._stop.wait(poll):
                return


class ProcessLiveness:
    """A worker process's own row in `workers`, beaten from a thread until stop()."""

    def __init__(self, settings: Settings, name: str, queue: str):
        self.settings, self.name, self.queue = settings, name, queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker-beat", daemon=True)

    def start(self) -> ProcessLiveness:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            with session_scope(self.settings) as session:
                remove_worker(session, self.name)
        except Exception as e:  # its row goes stale instead
            log.warning("could not remove worker row %s: %s", self.name, e)

    def _loop(self) -> None:
        while True:
            try:
                with session_scope(self.settings) as session:
                    beat_worker(session, self.name, self.queue)
            except Exception as e:
                log.warning("worker heartbeat failed (%s: %s)", type(e).__name__, e)
            if self._stop.wait(max(self.settings.heartbeat_seconds, 0.1)):
                return
