"""The worker's two jobs as plain functions: train a job's config, evaluate a stored model.

Each claims its job row first (a duplicate delivery finds it owned and returns None), runs, and
ends the job with a terminal state and, on failure, a one-line reason. worker.celery_app registers
them as Celery tasks; tests call them directly.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from store import jobs
from store.checkpoints import newest_checkpoint
from store.db import session_scope
from store.metrics import write_metrics
from store.models import Model
from store.queue import enqueue_job
from store.settings import Settings
from store.storage import StorageError, storage_from_settings
from worker.callbacks import JobCallbacks

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def job_device(settings: Settings, requested: str = "auto") -> str:
    """The device a job runs on: its own choice, else SAGAN_WORKER_DEVICE (auto: CUDA if any)."""
    from sagan_core.device import resolve_device

    return str(resolve_device(settings.worker_device if requested == "auto" else requested))


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


def _claim(settings: Settings, job_id: str, worker: str, kind: str) -> dict | None:
    """Claim the job; returns what the run needs from its row, or None if it is not ours."""
    with session_scope(settings) as session:
        try:
            claimed = jobs.claim_job(session, job_id, worker)
        except jobs.JobNotFound:
            log.warning("job %s does not exist; dropping the task", job_id)
            return None
        if not claimed:
            log.info("job %s is already owned or finished; duplicate delivery ignored", job_id)
            return None
        job = jobs.get_job(session, job_id)
        if job.kind != kind:
            jobs.finish_job(session, job_id, jobs.FAILED, f"a {kind} task got a {job.kind} job")
            return None
        ckpt = newest_checkpoint(session, job_id)
        return {
            "config": dict(job.config),
            "model_id": job.model_id,
            "attempts": job.attempts,
            "checkpoint_key": ckpt.key if ckpt else None,
            "checkpoint_step": ckpt.step if ckpt else None,
        }


def _finish(
    settings: Settings, job_id: str, worker: str, state: str, error: str | None = None
) -> str:
    with session_scope(settings) as session:
        if not jobs.finish_job(session, job_id, state, error, worker=worker):
            log.warning(
                "job %s: could not move to %s (no longer owned by %s)", job_id, state, worker
            )
    log.info("job %s %s%s", job_id, state, f": {error}" if error else "")
    return state


def _run_dir(settings: Settings, job_id: str) -> Path:
    root = settings.data_dir.resolve() / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=root))


def train_job(job_id: str, settings: Settings) -> str | None:
    """Run a train job to its end; returns the state it left the job in (None: not ours)."""
    from sagan_core.config import TrainConfig
    from sagan_core.data import build_dataset
    from sagan_core.trainer import Trainer

    worker = worker_name()
    row = _claim(settings, job_id, worker, "train")
    if row is None:
        return None
    storage = storage_from_settings(settings)
    last_checkpoint_step = row["checkpoint_step"]
    callbacks = None
    run_dir = _run_dir(settings, job_id)
    try:
        cfg = TrainConfig.from_dict(row["config"]).validate().resolved()
        cfg.device = job_device(settings, cfg.device)
        dataset = build_dataset(cfg)
        evaluator = None
        if cfg.eval_every:
            from worker.evaluation import train_evaluator

            evaluator = train_evaluator(dataset, cfg, settings, storage)
        resume = None
        if row["checkpoint_key"]:
            resume = run_dir / "resume.pt"
            storage.download(row["checkpoint_key"], resume)
            log.info("job %s resumes from step %d", job_id, row["checkpoint_step"])
        callbacks = JobCallbacks(
            job_id,
            worker,
            settings,
            storage,
            resolution=cfg.resolution,
            class_names=list(dataset.class_names),
            last_checkpoint_step=last_checkpoint_step,
        )
        trainer = Trainer(cfg, run_dir / "run", callbacks, evaluator=evaluator, dataset=dataset)
        result = trainer.run(resume_from=resume)
    except Exception as e:
        log.exception("job %s failed", job_id)
        if callbacks is not None:
            last_checkpoint_step = callbacks.last_checkpoint_step
        return _finish(
            settings, job_id, worker, jobs.FAILED, failure_message(e, last_checkpoint_step)
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    with session_scope(settings) as session:  # the final progress, with the last measured speed
        jobs.heartbeat(
            session, job_id, worker, step=result.step, images_per_s=callbacks.images_per_s
        )
    if not result.stopped:
        return _finish(settings, job_id, worker, jobs.SUCCEEDED)
    if callbacks.stop_reason == "cancel":
        return _finish(settings, job_id, worker, jobs.CANCELLED)
    if callbacks.stop_reason == "shutdown":
        with session_scope(settings) as session:
            state = jobs.release_job(session, job_id, worker)
        if state == jobs.QUEUED:
            enqueue_job(settings, job_id, "train")  # another worker (or this one) resumes it
        log.info("job %s: worker shutting down at step %d -> %s", job_id, result.step, state)
        return state
    log.warning(
        "job %s: lost ownership at step %d; leaving it to its new worker", job_id, result.step
    )
    return None


def evaluate_job(job_id: str, settings: Settings) -> str | None:
    """Evaluate a stored model (IS/FID/KID, per-class FID); metrics land at the model's step."""
    worker = worker_name()
    row = _claim(settings, job_id, worker, "evaluate")
    if row is None:
        return None
    storage = storage_from_settings(settings)
    run_dir = _run_dir(settings, job_id)
    try:
        from worker.evaluation import evaluate_model

        config = row["config"]
        key, step = config.get("checkpoint_key"), config.get("model_step")
        if not key:  # no snapshot in the job: the model's current checkpoint
            model_id = row["model_id"] or config.get("model_id")
            with session_scope(settings) as session:
                model = session.get(Model, model_id) if model_id else None
                if model is None:
                    raise LookupError(f"model {model_id!r} not found")
                key, step = model.checkpoint_key, model.step
        checkpoint = run_dir / "model.pt"
        storage.download(key, checkpoint)
        results = evaluate_model(checkpoint, config, settings, storage, job_device(settings))
        with session_scope(settings) as session:
            write_metrics(session, job_id, [(name, step, v) for name, v in results.items()])
            jobs.heartbeat(session, job_id, worker, step=step)
    except Exception as e:
        log.exception("evaluation job %s failed", job_id)
        return _finish(settings, job_id, worker, jobs.FAILED, failure_message(e, None))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return _finish(settings, job_id, worker, jobs.SUCCEEDED)
