"""The worker's jobs as plain functions: train a job's config, evaluate a stored model (packing a
stored dataset is worker.datasets.pack_job).

Each claims its job row first (worker.job_life: a duplicate delivery finds it owned by a live
worker and returns None; a job whose worker went silent is taken over), beats it from a thread
for the task's whole life, runs, and ends the job: succeeded, cancelled, or failed with a
one-line reason for the job's own errors (config, data, divergence, evaluation). An outage of the
database or storage is not the job's error: the run stops at its last checkpoint and the job goes
back to the queue. worker.celery_app registers them as Celery tasks; tests call them directly.
"""

from __future__ import annotations

import logging
import shutil

from store import jobs
from store.metrics import write_metrics, write_protocol
from store.outages import is_outage
from store.settings import Settings
from store.storage import storage_from_settings
from sweeps.driver import advance
from worker import job_life
from worker.evaluation import evaluate_model
from worker.job_life import failure_message, worker_name
from worker.liveness import JobLiveness
from worker.training import job_device, run_job, settle

log = logging.getLogger(__name__)


def train_job(job_id: str, settings: Settings) -> str | None:
    """Run a train job to its end; returns the state it left the job in (None: not ours)."""
    worker = worker_name()
    row = job_life.claim(settings, job_id, worker, "train")
    if row is None:
        return None
    try:
        with JobLiveness(settings, job_id, worker) as liveness:
            return _train(job_id, settings, worker, row, liveness)
    finally:
        if row["sweep_id"]:  # the sweep starts its next trial now, not at the reaper's next pass
            try:
                advance(settings, row["sweep_id"])
            except Exception as e:
                log.warning("sweep %s: not advanced after job %s (%s)", row["sweep_id"], job_id, e)


def _train(
    job_id: str, settings: Settings, worker: str, row: dict, liveness: JobLiveness
) -> str | None:
    if settings.launcher == "slurm":  # the run is an allocation's; this worker watches it
        from worker.slurm import train_on_slurm

        return train_on_slurm(job_id, settings, worker, row, liveness)
    work = job_life.run_dir(settings, job_id)
    try:
        outcome = run_job(job_id, settings, worker, row, liveness, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return settle(settings, job_id, worker, row, outcome)


def evaluate_job(job_id: str, settings: Settings) -> str | None:
    """Evaluate a stored model (IS/FID/KID, per-class FID); metrics land at the model's step."""
    worker = worker_name()
    row = job_life.claim(settings, job_id, worker, "evaluate")
    if row is None:
        return None
    storage = storage_from_settings(settings)
    run_dir = job_life.run_dir(settings, job_id)
    try:
        with JobLiveness(settings, job_id, worker) as liveness:
            config = row["config"]  # the API snapshots the model's checkpoint into it
            key, step = config["checkpoint_key"], config["model_step"]
            checkpoint = run_dir / "model.pt"
            storage.download(key, checkpoint)

            def progress(done: int) -> None:  # images generated: the next beat shows them
                liveness.step = done

            device = job_device(settings)
            results = evaluate_model(
                checkpoint, config, settings, storage, device, job_id=job_id, progress=progress
            )

            def record(session) -> None:  # noqa: ANN001  (the scores at the model's step)
                write_metrics(session, job_id, [(name, step, v) for name, v in results.items()])
                if getattr(results, "protocol", None):
                    write_protocol(session, job_id, step, results.protocol)
                jobs.heartbeat(session, job_id, worker, step=liveness.step)

            job_life.in_transaction(settings, f"job {job_id}: metrics", record)
    except Exception as e:
        if is_outage(e):  # an evaluation has no checkpoint of its own: it simply runs again
            return job_life.release(settings, job_id, worker, f"outage ({e})", kind="evaluate")
        log.exception("evaluation job %s failed", job_id)
        return job_life.finish(settings, job_id, worker, jobs.FAILED, failure_message(e, None))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return job_life.finish(settings, job_id, worker, jobs.SUCCEEDED)
