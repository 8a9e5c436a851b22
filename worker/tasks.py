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

import dataclasses
import logging
import shutil
from contextlib import ExitStack

from store import jobs
from store.metrics import write_metrics, write_protocol
from store.outages import call_through_outages, is_outage
from store.queue import job_gpus
from store.settings import Settings
from store.storage import storage_from_settings
from sweeps.driver import advance
from sweeps.pruning import TrialReporter
from worker import job_life
from worker.callbacks import JobCallbacks
from worker.datasets import stored_as_packed
from worker.evaluation import evaluate_model, train_evaluator
from worker.job_life import failure_message, worker_name
from worker.liveness import JobLiveness

log = logging.getLogger(__name__)


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
    from sagan_core.config import Limits, TrainConfig
    from sagan_core.data import build_dataset
    from sagan_core.data_roots import check_data_location
    from sagan_core.distributed import RankLostError
    from sagan_core.launch import train_distributed
    from sagan_core.trainer import Trainer

    storage = storage_from_settings(settings)
    gpus = job_gpus(row["config"])
    last_checkpoint_step = row["checkpoint_step"]
    callbacks = None
    run_dir = job_life.run_dir(settings, job_id)
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
        data_config, reference_key = cfg, None  # what every rank builds its dataset from
        if cfg.dataset == "stored":  # the packed file from this machine's cache, memory-mapped
            data_config, reference_key = uses.enter_context(
                stored_as_packed(settings, storage, job_id, cfg)
            )
        dataset = build_dataset(data_config)
        evaluator = None
        if cfg.eval_every:
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
            reporter=TrialReporter(
                settings, row["sweep_id"], row["trial_number"], row["sweep_spec"]
            )
            if row["sweep_id"]
            else None,
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
        callbacks.drain()  # the last checkpoint registered before the job ends (an outage: below)
    except Exception as e:
        if callbacks is not None:
            callbacks.drain(reraise=False)  # what the run registered counts; `e` is what it tells
            last_checkpoint_step = callbacks.last_checkpoint_step
        kept = f"resumes from step {last_checkpoint_step or 0}"
        if is_outage(e):
            log.warning("job %s stopped by an outage: %s", job_id, e)
            return job_life.release(settings, job_id, worker, f"outage ({e}); {kept}", gpus=gpus)
        if isinstance(e, RankLostError):
            return job_life.lose(settings, job_id, worker, f"{e}; {kept}", gpus)
        log.exception("job %s failed", job_id)
        return job_life.finish(
            settings, job_id, worker, jobs.FAILED, failure_message(e, last_checkpoint_step)
        )
    finally:
        if callbacks is not None:  # no upload still reading the run dir, whatever stopped the run
            callbacks.drain(reraise=False)
        uses.close()
        shutil.rmtree(run_dir, ignore_errors=True)

    def final_progress(session) -> None:  # noqa: ANN001  (with the last measured speed)
        jobs.heartbeat(
            session, job_id, worker, step=result.step, images_per_s=callbacks.images_per_s
        )

    job_life.in_transaction(settings, f"job {job_id}: final progress", final_progress)
    if not result.stopped:
        return job_life.finish(settings, job_id, worker, jobs.SUCCEEDED)
    if callbacks.stop_reason == "cancel":
        return job_life.finish(settings, job_id, worker, jobs.CANCELLED)
    if callbacks.stop_reason == "pruned":  # its checkpoint at this step is registered
        return job_life.finish(settings, job_id, worker, jobs.PRUNED, callbacks.prune_reason)
    if callbacks.stop_reason == "shutdown":
        reason = f"worker shut down at step {result.step}"
        return job_life.release(settings, job_id, worker, reason, gpus=gpus)
    log.warning(
        "job %s: lost ownership at step %d; leaving it to its new worker", job_id, result.step
    )
    return None


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
