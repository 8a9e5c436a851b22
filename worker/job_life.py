"""A job's life on a worker, whatever its kind: claim the row, run in transactions that outlast a
database outage, and end it: finished (succeeded, failed with one line, cancelled), released to
the queue at its last checkpoint, or counted as a lost worker. worker.tasks runs the train,
evaluate and pack jobs over it."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from store import jobs
from store.checkpoints import resume_checkpoint
from store.db import session_scope
from store.models import Sweep
from store.outages import call_through_outages
from store.queue import send_or_note
from store.settings import Settings
from store.storage import StorageError

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_here(worker: str) -> bool:
    """Whether `worker` (host:pid) is a process of this machine that no longer runs."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie (not reaped by its parent yet) is dead too
    try:
        return stat.read_text().rsplit(") ", 1)[-1].startswith("Z")
    except OSError:
        return False


def failure_message(error: BaseException, last_checkpoint_step: int | None) -> str:
    """One line for the job's `error`: what went wrong, never a traceback."""
    from sagan_core.config import ConfigError
    from sagan_core.data import DatasetError
    from sagan_core.evaluate import EvaluationError
    from sagan_core.trainer import DivergedError

    if isinstance(error, DivergedError):
        kept = (
            f"last good checkpoint step {last_checkpoint_step}"
            if last_checkpoint_step is not None
            else "no checkpoint was written before it"
        )
        message = f"diverged: {error}; {kept}"
    elif isinstance(error, ConfigError):
        message = f"invalid config: {error}"
    elif isinstance(error, DatasetError):
        message = f"dataset error: {error}"
    elif isinstance(error, EvaluationError):
        message = f"evaluation failed: {error}"
    elif isinstance(error, StorageError):
        message = f"storage error: {error}"
    else:
        message = f"{type(error).__name__}: {error}"
    return message[:MAX_ERROR_CHARS]


def in_transaction(settings: Settings, what: str, fn: Callable[..., T]) -> T:
    """fn(session) in one transaction, retried through a database outage."""

    def attempt() -> T:
        with session_scope(settings) as session:
            return fn(session)

    return call_through_outages(attempt, what, within_s=settings.outage_retry_seconds)


def claim(settings: Settings, job_id: str, worker: str, kind: str) -> dict | None:
    """Claim the job; returns what the run needs from its row, or None if it is not ours."""

    def take(session) -> dict | None:  # noqa: ANN001
        try:
            claimed = jobs.claim_job(
                session,
                job_id,
                worker,
                stale_after=timedelta(seconds=settings.stale_after_seconds),
                max_attempts=settings.max_attempts,
                owner_dead=dead_here,
            )
        except jobs.JobNotFound:
            log.warning("job %s does not exist; dropping the task", job_id)
            return None
        if not claimed:
            log.info("job %s is owned by a live worker or ended; delivery ignored", job_id)
            return None
        job = jobs.get_job(session, job_id)
        if job.kind != kind:
            jobs.finish_job(session, job_id, jobs.FAILED, f"a {kind} task got a {job.kind} job")
            return None
        ckpt = resume_checkpoint(session, job)  # its own newest, or the one it continues
        sweep = session.get(Sweep, job.sweep_id) if job.sweep_id else None
        return {
            "sweep_id": job.sweep_id,
            "trial_number": job.trial_number,
            "sweep_spec": dict(sweep.spec) if sweep is not None else None,
            "config": dict(job.config),
            "model_id": job.model_id,
            "attempts": job.attempts,
            "checkpoint_key": ckpt.key if ckpt else None,
            "checkpoint_step": ckpt.step if ckpt else None,
        }

    return in_transaction(settings, f"claim of job {job_id}", take)


def finish(
    settings: Settings, job_id: str, worker: str, state: str, error: str | None = None
) -> str:
    def move(session) -> bool:  # noqa: ANN001
        return jobs.finish_job(session, job_id, state, error, worker=worker)

    if not in_transaction(settings, f"job {job_id}: move to {state}", move):
        log.warning("job %s: could not move to %s (no longer owned by %s)", job_id, state, worker)
    log.info("job %s %s%s", job_id, state, f": {error}" if error else "")
    return state


def release(
    settings: Settings, job_id: str, worker: str, reason: str, kind: str = "train", gpus: int = 1
) -> str | None:
    """Back to the queue in order (the run stopped at its last checkpoint), then a wake-up call.

    If the database stays away even for this, the job keeps its stale heartbeat and the reaper
    requeues it once the database is back.
    """
    try:
        state = in_transaction(
            settings,
            f"job {job_id}: release",
            lambda session: jobs.release_job(session, job_id, worker, reason),
        )
    except Exception as e:
        log.error("job %s: could not release it (%s); the reaper will requeue it", job_id, e)
        return None
    if state == jobs.QUEUED:
        send_again(settings, job_id, kind, gpus)
    log.info("job %s: %s -> %s", job_id, reason, state)
    return state


def pause(settings: Settings, job_id: str, worker: str, reason: str) -> str | None:
    """A sweep's trial waits at a rung, its checkpoint registered: paused, holding no worker,
    until the sweep's driver resumes it (queued again) or prunes it."""
    state = in_transaction(
        settings,
        f"job {job_id}: pause",
        lambda session: jobs.pause_job(session, job_id, worker, reason),
    )
    log.info("job %s: %s -> %s", job_id, reason, state)
    return state


def send_again(settings: Settings, job_id: str, kind: str, gpus: int) -> None:
    send_or_note(settings, job_id, kind, gpus)  # refused: the dispatcher re-sends it later


def lose(settings: Settings, job_id: str, worker: str, reason: str, gpus: int) -> str | None:
    """A part of the run died (a rank of a multi-GPU job): a loss of the retry budget; the job
    is requeued to resume from its last checkpoint, or fails once the budget is spent."""
    state = in_transaction(
        settings,
        f"job {job_id}: lost a rank",
        lambda session: jobs.lose_worker(session, job_id, worker, reason, settings.max_attempts),
    )
    if state == jobs.QUEUED:
        send_again(settings, job_id, "train", gpus)
    log.warning("job %s: %s -> %s", job_id, reason, state)
    return state


def run_dir(settings: Settings, job_id: str) -> Path:
    root = settings.data_dir.resolve() / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=root))
