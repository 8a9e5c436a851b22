"""The worker's two jobs as plain functions: train a job's config, evaluate a stored model.

Each claims its job row first (a duplicate delivery finds it owned by a live worker and returns
None; a job whose worker went silent is taken over), beats it from a thread for the task's whole
life, runs, and ends the job: succeeded, cancelled, or failed with a one-line reason for the job's
own errors (config, data, divergence, evaluation). An outage of the database or storage is not
the job's error: the run stops at its last checkpoint and the job goes back to the queue.
worker.celery_app registers them as Celery tasks; tests call them directly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from store import jobs
from store.checkpoints import resume_checkpoint
from store.db import session_scope
from store.metrics import write_metrics
from store.models import Model
from store.outages import call_through_outages, is_outage
from store.queue import enqueue_job, job_gpus
from store.settings import Settings
from store.storage import StorageError, storage_from_settings
from worker.callbacks import JobCallbacks
from worker.liveness import JobLiveness

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def job_device(settings: Settings, requested: str = "auto") -> str:
    """The device a job runs on: its own choice, else SAGAN_WORKER_DEVICE (auto: CUDA if any).

    One this worker lacks (cuda on a CPU-only machine, cuda:3 of two GPUs, mps) is a
    ConfigError("device", ...), so the job fails at once with one line, not a torch error.
    """
    from sagan_core.config import ConfigError
    from sagan_core.device import check_device_available, resolve_device

    name = settings.worker_device if requested == "auto" else requested
    hint = f"(SAGAN_WORKER_DEVICE={settings.worker_device})"
    try:
        device = resolve_device(name)
    except RuntimeError as e:  # torch's "Expected one of cpu, cuda, ..." for a bad name
        raise ConfigError("device", f"{name!r} is not a device name {hint}") from e
    return str(check_device_available(device, name, where="this worker", hint=hint))


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


def _db(settings: Settings, what: str, fn: Callable[..., T]) -> T:
    """fn(session) in one transaction, retried through a database outage."""

    def attempt() -> T:
        with session_scope(settings) as session:
            return fn(session)

    return call_through_outages(attempt, what, within_s=settings.outage_retry_seconds)


def _claim(settings: Settings, job_id: str, worker: str, kind: str) -> dict | None:
    """Claim the job; returns what the run needs from its row, or None if it is not ours."""

    def claim(session) -> dict | None:  # noqa: ANN001
        try:
            claimed = jobs.claim_job(
                session,
                job_id,
                worker,
                stale_after=timedelta(seconds=settings.stale_after_seconds),
                max_attempts=settings.max_attempts,
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
        return {
            "config": dict(job.config),
            "model_id": job.model_id,
            "attempts": job.attempts,
            "checkpoint_key": ckpt.key if ckpt else None,
            "checkpoint_step": ckpt.step if ckpt else None,
        }

    return _db(settings, f"claim of job {job_id}", claim)


def _finish(
    settings: Settings, job_id: str, worker: str, state: str, error: str | None = None
) -> str:
    def finish(session) -> bool:  # noqa: ANN001
        return jobs.finish_job(session, job_id, state, error, worker=worker)

    if not _db(settings, f"job {job_id}: move to {state}", finish):
        log.warning("job %s: could not move to %s (no longer owned by %s)", job_id, state, worker)
    log.info("job %s %s%s", job_id, state, f": {error}" if error else "")
    return state


def _release(
    settings: Settings, job_id: str, worker: str, reason: str, kind: str = "train", gpus: int = 1
) -> str | None:
    """Back to the queue in order (the run stopped at its last checkpoint), then a wake-up call.

    If the database stays away even for this, the job keeps its stale heartbeat and the reaper
    requeues it once the database is back.
    """
    try:
        state = _db(
            settings,
            f"job {job_id}: release",
            lambda session: jobs.release_job(session, job_id, worker, reason),
        )
    except Exception as e:
        log.error("job %s: could not release it (%s); the reaper will requeue it", job_id, e)
        return None
    if state == jobs.QUEUED:
        _send_again(settings, job_id, kind, gpus)
    log.info("job %s: %s -> %s", job_id, reason, state)
    return state


def _send_again(settings: Settings, job_id: str, kind: str, gpus: int) -> None:
    try:
        enqueue_job(settings, job_id, kind, gpus)
    except Exception as e:  # the dispatcher re-sends queued jobs nobody claims
        log.warning("job %s: requeued, but the broker refused the task (%s)", job_id, e)


def _lose(settings: Settings, job_id: str, worker: str, reason: str, gpus: int) -> str | None:
    """A part of the run died (a rank of a multi-GPU job): a loss of the retry budget; the job
    is requeued to resume from its last checkpoint, or fails once the budget is spent."""
    state = _db(
        settings,
        f"job {job_id}: lost a rank",
        lambda session: jobs.lose_worker(session, job_id, worker, reason, settings.max_attempts),
    )
    if state == jobs.QUEUED:
        _send_again(settings, job_id, "train", gpus)
    log.warning("job %s: %s -> %s", job_id, reason, state)
    return state


def worker_gpus(settings: Settings) -> int:
    """GPUs (processes) this worker gives one job: SAGAN_WORKER_GPUS, else its CUDA devices."""
    if settings.worker_gpus:
        return settings.worker_gpus
    import torch

    cpu = settings.worker_device == "cpu" or not torch.cuda.is_available()
    return 1 if cpu else max(1, torch.cuda.device_count())


def _check_gpus(settings: Settings, cfg) -> None:  # noqa: ANN001
    """A job asking for more GPUs than this worker gives fails at once, in one line."""
    from sagan_core.config import ConfigError

    have = worker_gpus(settings)
    if cfg.gpus > have:
        raise ConfigError(
            "gpus",
            f"the job asks for {cfg.gpus} and this worker gives {have} (SAGAN_WORKER_GPUS); "
            f"it was sent to queue {settings.queue_for(cfg.gpus)}, which only workers of "
            f"{cfg.gpus} or more should consume",
        )
    if cfg.gpus > 1 and cfg.device.startswith("cuda"):
        import torch

        if torch.cuda.device_count() < cfg.gpus:
            raise ConfigError(
                "gpus",
                f"the job asks for {cfg.gpus} GPUs and this worker sees "
                f"{torch.cuda.device_count()} (CUDA_VISIBLE_DEVICES)",
            )


def _run_dir(settings: Settings, job_id: str) -> Path:
    root = settings.data_dir.resolve() / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"job-{job_id}-", dir=root))


def train_job(job_id: str, settings: Settings) -> str | None:
    """Run a train job to its end; returns the state it left the job in (None: not ours)."""
    worker = worker_name()
    row = _claim(settings, job_id, worker, "train")
    if row is None:
        return None
    with JobLiveness(settings, job_id, worker) as liveness:
        return _train(job_id, settings, worker, row, liveness)


def _train(
    job_id: str, settings: Settings, worker: str, row: dict, liveness: JobLiveness
) -> str | None:
    from sagan_core.config import Limits, TrainConfig, check_data_location
    from sagan_core.data import build_dataset
    from sagan_core.distributed import RankLostError, train_distributed
    from sagan_core.trainer import Trainer

    storage = storage_from_settings(settings)
    gpus = job_gpus(row["config"])
    last_checkpoint_step = row["checkpoint_step"]
    callbacks = None
    run_dir = _run_dir(settings, job_id)
    uses = ExitStack()  # a stored dataset stays in use (not evicted from the cache) until the end
    try:
        # Checked again here, with this worker's settings: the job may have been queued before
        # the operator tightened the limits or the data roots.
        # (GPUs are this worker's to judge: _check_gpus, not the API's largest pool)
        limits = dataclasses.replace(settings.limits(), gpus=Limits.gpus)
        cfg = TrainConfig.from_dict(row["config"]).validate(limits).resolved()
        cfg = check_data_location(cfg, settings.resolved_data_roots(), settings.private_paths())
        cfg.device = job_device(settings, cfg.device)
        _check_gpus(settings, cfg)
        data_config = cfg  # what the ranks of a multi-GPU run build their dataset from
        reference_key = None
        if cfg.dataset == "stored":  # the packed file from this machine's cache, memory-mapped
            from worker.datasets import stored_dataset

            local = uses.enter_context(
                stored_dataset(settings, storage, job_id, cfg.dataset_id, cfg.resolution)
            )
            packed = dataclasses.replace(cfg, dataset="packed", data_root=str(local.path))
            dataset, reference_key = build_dataset(packed), local.reference_key
            data_config = packed
        else:
            dataset = build_dataset(cfg)
        evaluator = None
        if cfg.eval_every:
            from worker.evaluation import train_evaluator

            evaluator = train_evaluator(
                dataset, cfg, settings, storage, reference_key=reference_key
            )
        resume = None
        if row["checkpoint_key"]:
            resume = run_dir / "resume.pt"
            call_through_outages(
                lambda: storage.download(row["checkpoint_key"], resume),
                f"job {job_id}: download of checkpoint {row['checkpoint_step']}",
                within_s=settings.outage_retry_seconds,
            )
            step, key = row["checkpoint_step"], row["checkpoint_key"]
            log.info("job %s resumes from step %d (%s)", job_id, step, key)
        callbacks = JobCallbacks(
            job_id,
            worker,
            settings,
            storage,
            liveness,
            resolution=cfg.resolution,
            class_names=list(dataset.class_names),
            last_checkpoint_step=last_checkpoint_step,
        )
        if cfg.gpus > 1:  # this process is rank 0: the callbacks stay here
            result = train_distributed(
                cfg, run_dir / "run", callbacks, evaluator, dataset, limits, resume, data_config
            )
        else:
            trainer = Trainer(
                cfg, run_dir / "run", callbacks, evaluator=evaluator, dataset=dataset, limits=limits
            )
            result = trainer.run(resume_from=resume)
    except Exception as e:
        if callbacks is not None:
            last_checkpoint_step = callbacks.last_checkpoint_step
        kept = f"resumes from step {last_checkpoint_step or 0}"
        if is_outage(e):
            log.warning("job %s stopped by an outage: %s", job_id, e)
            return _release(settings, job_id, worker, f"outage ({e}); {kept}", gpus=gpus)
        if isinstance(e, RankLostError):
            return _lose(settings, job_id, worker, f"{e}; {kept}", gpus)
        log.exception("job %s failed", job_id)
        return _finish(
            settings, job_id, worker, jobs.FAILED, failure_message(e, last_checkpoint_step)
        )
    finally:
        uses.close()
        shutil.rmtree(run_dir, ignore_errors=True)

    def final_progress(session) -> None:  # noqa: ANN001  (with the last measured speed)
        jobs.heartbeat(
            session, job_id, worker, step=result.step, images_per_s=callbacks.images_per_s
        )

    _db(settings, f"job {job_id}: final progress", final_progress)
    if not result.stopped:
        return _finish(settings, job_id, worker, jobs.SUCCEEDED)
    if callbacks.stop_reason == "cancel":
        return _finish(settings, job_id, worker, jobs.CANCELLED)
    if callbacks.stop_reason == "shutdown":
        reason = f"worker shut down at step {result.step}"
        return _release(settings, job_id, worker, reason, gpus=gpus)
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
        with JobLiveness(settings, job_id, worker):
            from worker.evaluation import evaluate_model

            config = row["config"]
            key, step = config.get("checkpoint_key"), config.get("model_step")
            if not key:  # no snapshot in the job: the model's current checkpoint
                model_id = row["model_id"] or config.get("model_id")
                model = _db(
                    settings,
                    f"job {job_id}: model",
                    lambda session: session.get(Model, model_id) if model_id else None,
                )
                if model is None:
                    raise LookupError(f"model {model_id!r} not found")
                key, step = model.checkpoint_key, model.step
            checkpoint = run_dir / "model.pt"
            storage.download(key, checkpoint)
            results = evaluate_model(
                checkpoint, config, settings, storage, job_device(settings), job_id=job_id
            )

            def record(session) -> None:  # noqa: ANN001
                write_metrics(session, job_id, [(name, step, v) for name, v in results.items()])
                jobs.heartbeat(session, job_id, worker, step=step)

            _db(settings, f"job {job_id}: metrics", record)
    except Exception as e:
        if is_outage(e):  # an evaluation has no checkpoint of its own: it simply runs again
            return _release(settings, job_id, worker, f"outage ({e})", kind="evaluate")
        log.exception("evaluation job %s failed", job_id)
        return _finish(settings, job_id, worker, jobs.FAILED, failure_message(e, None))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return _finish(settings, job_id, worker, jobs.SUCCEEDED)
