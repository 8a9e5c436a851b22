"""A train job's run and how it ended, apart: `run_job` trains and says how the run ended (an
`Outcome`); `settle` moves the job row accordingly (succeeded, cancelled, pruned, failed, back to
the queue, lost).

The two halves run in one process for the local launcher (worker.tasks). Under the slurm launcher
(worker.slurm) `run_job` runs in rank 0 of the allocation (worker.allocation), which writes its
Outcome to the shared run directory, and `settle` runs in the worker that claimed the job once the
allocation ended: the job's state machine stays in the claiming worker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from store import jobs
from store.outages import call_through_outages, is_outage
from store.queue import job_gpus
from store.settings import Settings
from store.storage import StorageError, storage_from_settings
from sweeps.pruning import TrialReporter
from worker import job_life
from worker.callbacks import JobCallbacks, worker_shutting_down
from worker.datasets import stored_as_packed
from worker.evaluation import train_evaluator
from worker.job_life import failure_message
from worker.liveness import JobLiveness

log = logging.getLogger(__name__)

# Outcome.end: what `settle` does with the job.
SUCCEEDED, CANCELLED, PRUNED, FAILED = "succeeded", "cancelled", "pruned", "failed"
PAUSED = "paused"  # a sweep's trial waits at a rung; its driver resumes or prunes it
RELEASE = "release"  # back to the queue, resumes from its last checkpoint (not a loss)
LOSE = "lose"  # a lost worker: requeued while attempts remain (SAGAN_MAX_ATTEMPTS)
NOT_OURS = "not ours"  # another worker took the job over: leave it alone


@dataclasses.dataclass
class Outcome:
    """How a run ended, as the job row needs it."""

    end: str
    reason: str | None = None
    step: int | None = None  # the run's last step (the final progress beat)
    images_per_s: float | None = None

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self)))
        tmp.replace(path)  # a reader never sees half of it

    @classmethod
    def read(cls, path: Path) -> Outcome | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


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


def check_gpus(settings: Settings, cfg) -> None:  # noqa: ANN001
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


@dataclasses.dataclass
class Prepared:
    """What every rank of a job trains with (its config, data, limits, where it resumes from)."""

    cfg: Any  # TrainConfig, resolved, on its device
    data_config: Any  # what the ranks build their dataset from (a stored set's packed file)
    dataset: Any
    limits: Any
    resume: Path | None
    reference_key: str | None


def prepare(
    job_id: str,
    settings: Settings,
    row: dict,
    work: Path,
    uses: ExitStack,
    ranks=None,  # noqa: ANN001  (sagan_core.distributed.Ranks in an allocation)
    device: str | None = None,  # in an allocation: "cuda" or "cpu", each rank on its own
) -> Prepared:
    """The job's config checked with this machine's settings, its data, its resume checkpoint."""
    from sagan_core.config import Limits, TrainConfig
    from sagan_core.data import build_dataset
    from sagan_core.data_roots import check_data_location

    storage = storage_from_settings(settings)
    # Checked again here, with this worker's settings: the job may have been queued before the
    # operator tightened the limits or the data roots. (GPUs are this worker's to judge:
    # check_gpus, not the API's largest pool; in an allocation, Slurm placed them.)
    limits = dataclasses.replace(settings.limits(), gpus=Limits.gpus)
    cfg = TrainConfig.from_dict(row["config"]).validate(limits).resolved()
    cfg = check_data_location(cfg, settings.resolved_data_roots(), settings.private_paths())
    if ranks is None:
        cfg.device = job_device(settings, cfg.device)
        if cfg.nodes > 1:
            from sagan_core.config import ConfigError
            from sagan_core.launch import ONE_MACHINE

            raise ConfigError("nodes", ONE_MACHINE.format(nodes=cfg.nodes))
        check_gpus(settings, cfg)
    else:
        cfg.device = device or "cpu"
    data_config, reference_key = cfg, None
    if cfg.dataset == "stored":  # the packed file from this machine's cache, memory-mapped
        data_config, reference_key = uses.enter_context(
            stored_as_packed(settings, storage, job_id, cfg)
        )
    dataset = build_dataset(data_config)
    resume = None
    if row["checkpoint_key"]:
        work.mkdir(parents=True, exist_ok=True)
        resume = work / f"resume-{ranks.rank if ranks is not None else 0}.pt"
        call_through_outages(
            lambda: storage.download(row["checkpoint_key"], resume),
            f"job {job_id}: download of checkpoint {row['checkpoint_step']}",
            within_s=settings.outage_retry_seconds,
        )
        log.info("job %s resumes from step %d", job_id, row["checkpoint_step"])
    return Prepared(cfg, data_config, dataset, limits, resume, reference_key)


def is_job_own(error: BaseException) -> bool:
    """The job's own failure (the same wherever it runs), not the loss of a process or a peer:
    the run's own errors as the elastic launch tells them apart, and the service's evaluation and
    storage errors."""
    from sagan_core.elastic import JOB_ERRORS
    from sagan_core.evaluate import EvaluationError

    return isinstance(error, (*JOB_ERRORS.values(), EvaluationError, StorageError))


def run_job(
    job_id: str,
    settings: Settings,
    worker: str,
    row: dict,
    liveness: JobLiveness,
    work: Path,
    *,
    ranks=None,  # noqa: ANN001  (rank 0 of an allocation: sagan_core.distributed.Ranks)
    resume_from: Path | None = None,
    device: str | None = None,
    shutting_down: Callable[[], bool] = worker_shutting_down,
) -> Outcome:
    """Train the job in `work` (the run in work/run, or in `work` itself for an allocation's rank
    0) and say how it ended. An outage, a lost rank or the job's own error are Outcomes; in an
    allocation any other exception is raised (a lost peer: torchrun restarts or ends the gang)."""
    from sagan_core.distributed import RankLostError
    from sagan_core.launch import train_distributed
    from sagan_core.trainer import Trainer

    storage = storage_from_settings(settings)
    last_checkpoint_step = row["checkpoint_step"]
    callbacks = None
    uses = ExitStack()  # a stored dataset stays in use (not evicted from the cache) until the end
    try:
        run = prepare(job_id, settings, row, work, uses, ranks, device)
        resume = resume_from or run.resume
        evaluator = None
        if run.cfg.eval_every:
            evaluator = train_evaluator(
                run.dataset, run.cfg, settings, storage, reference_key=run.reference_key
            )
        callbacks = JobCallbacks(
            job_id,
            worker,
            settings,
            storage,
            liveness,
            resolution=run.cfg.resolution,
            class_names=list(run.dataset.class_names),
            last_checkpoint_step=last_checkpoint_step,
            reporter=TrialReporter(
                settings, row["sweep_id"], row["trial_number"], row["sweep_spec"], run.cfg.steps
            )
            if row["sweep_id"]
            else None,
            shutting_down=shutting_down,
        )
        if ranks is not None:  # this process is rank 0 of an allocation
            trainer = Trainer(
                run.cfg, work, callbacks, evaluator, run.dataset, run.limits, ranks=ranks
            )
            result = trainer.run(resume_from=resume)
        elif run.cfg.gpus > 1:  # this process is the ranks' caller: the callbacks stay here
            result = train_distributed(
                run.cfg, work / "run", callbacks, evaluator, run.dataset, run.limits, resume,
                run.data_config,
            )  # fmt: skip
        else:
            trainer = Trainer(run.cfg, work / "run", callbacks, evaluator, run.dataset, run.limits)
            result = trainer.run(resume_from=resume)
        callbacks.drain()  # the last checkpoint registered before the job ends (an outage: below)
    except Exception as e:
        if callbacks is not None:
            callbacks.drain(reraise=False)  # what the run registered counts; `e` is what it tells
            last_checkpoint_step = callbacks.last_checkpoint_step
        kept = f"resumes from step {last_checkpoint_step or 0}"
        if is_outage(e):
            log.warning("job %s stopped by an outage: %s", job_id, e)
            return Outcome(RELEASE, f"outage ({e}); {kept}")
        if isinstance(e, RankLostError):
            return Outcome(LOSE, f"{e}; {kept}")
        if ranks is not None and not is_job_own(e):
            raise
        log.exception("job %s failed", job_id)
        return Outcome(FAILED, failure_message(e, last_checkpoint_step))
    finally:
        if callbacks is not None:  # no upload still reading the run dir, whatever stopped the run
            callbacks.drain(reraise=False)
        uses.close()

    speed = {"step": result.step, "images_per_s": callbacks.images_per_s}
    if not result.stopped:
        return Outcome(SUCCEEDED, **speed)
    if callbacks.stop_reason == "cancel":
        return Outcome(CANCELLED, **speed)
    if callbacks.stop_reason in (PRUNED, PAUSED):  # its checkpoint at this step is registered
        return Outcome(callbacks.stop_reason, callbacks.verdict.reason, **speed)
    if callbacks.stop_reason == "shutdown":
        return Outcome(RELEASE, f"worker shut down at step {result.step}", **speed)
    log.warning(
        "job %s: lost ownership at step %d; leaving it to its new worker", job_id, result.step
    )
    return Outcome(NOT_OURS, step=result.step)


def settle(settings: Settings, job_id: str, worker: str, row: dict, outcome: Outcome) -> str | None:
    """Move the job as its run ended; returns the state it left the job in (None: not ours)."""
    gpus = job_gpus(row["config"])
    if outcome.end == NOT_OURS:
        return None
    if outcome.step is not None:

        def final_progress(session) -> None:  # noqa: ANN001  (with the last measured speed)
            jobs.heartbeat(
                session, job_id, worker, step=outcome.step, images_per_s=outcome.images_per_s
            )

        job_life.in_transaction(settings, f"job {job_id}: final progress", final_progress)
    if outcome.end == RELEASE:
        return job_life.release(settings, job_id, worker, outcome.reason or "released", gpus=gpus)
    if outcome.end == LOSE:
        return job_life.lose(settings, job_id, worker, outcome.reason or "lost", gpus)
    if outcome.end == PAUSED:
        return job_life.pause(settings, job_id, worker, outcome.reason or "paused")
    state = {
        SUCCEEDED: jobs.SUCCEEDED,
        CANCELLED: jobs.CANCELLED,
        PRUNED: jobs.PRUNED,
        FAILED: jobs.FAILED,
    }[outcome.end]
    return job_life.finish(settings, job_id, worker, state, outcome.reason)
