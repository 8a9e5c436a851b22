"""Trainer callbacks of a job: metric rows, checkpoint uploads, and stopping for cancels, shutdowns
and takeovers. Database and storage calls are retried through outages (store.outages)."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sagan_core.trainer import TrainerCallbacks
from store import jobs, log_format
from store.checkpoints import checkpoint_key, prune_checkpoints, register_checkpoint
from store.db import session_scope
from store.metrics import write_metrics, write_protocol
from store.outages import call_through_outages
from store.sample_grids import sample_grid_key
from store.settings import Settings
from store.storage import Storage
from store.telemetry import CHECKPOINT_UPLOAD_BYTES, CHECKPOINT_UPLOAD_SECONDS
from sweeps.pruning import TrialReporter, Verdict
from worker import metrics_port
from worker.liveness import JobLiveness
from worker.uploads import BackgroundUploads

log = logging.getLogger(__name__)
T = TypeVar("T")


def worker_shutting_down() -> bool:
    """True once Celery's warm/cold shutdown started (SIGTERM/SIGINT/SIGQUIT to the worker)."""
    from celery.worker import state

    # Set flags hold an exit code (a clean one is 0): test identity, as Celery does.
    return any(
        flag is not None and flag is not False
        for flag in (state.should_stop, state.should_terminate)
    )


class SmoothedRate:
    """The rate over the last `windows` log windows (equal steps each): their harmonic mean, the
    images they trained over the time they took. One fast or slow window (a loaded machine, an
    evaluation) moves it by a share, and a machine that stays slower moves it all the way."""

    def __init__(self, windows: int = 8):
        self.rates: deque[float] = deque(maxlen=windows)

    def add(self, rate: float) -> float:
        if rate > 0 and math.isfinite(rate):
            self.rates.append(rate)
        if not self.rates:
            return rate
        return len(self.rates) / sum(1.0 / r for r in self.rates)


class JobCallbacks(TrainerCallbacks):
    """Connects one Trainer run to its job row (the settings' database) and to object storage.

    `resolution` and `class_names` describe the run's model for the checkpoint and model rows;
    `liveness` is the task's heartbeat thread, which also tells of cancels and takeovers.
    """

    def __init__(
        self,
        job_id: str,
        worker: str,
        settings: Settings,
        storage: Storage,
        liveness: JobLiveness,
        *,
        resolution: int,
        class_names: list[str],
        last_checkpoint_step: int | None = None,
        reporter: TrialReporter | None = None,
        shutting_down: Callable[[], bool] = worker_shutting_down,
    ):
        self.job_id = job_id
        self.worker = worker
        self.settings = settings
        self.storage = storage
        self.liveness = liveness
        self.resolution = resolution
        self.class_names = list(class_names)
        self.stop_reason: str | None = None  # cancel | shutdown | lost | pruned | paused
        self.reporter = reporter  # a sweep's trial: its objective goes to the sweep's pruner
        self.verdict: Verdict | None = None  # the sweep's: pruned, or paused at a rung
        self.last_checkpoint_step = last_checkpoint_step  # the last one *registered*
        self.uploads = BackgroundUploads(f"job {job_id}", background=settings.background_uploads)
        self.images_per_s: float | None = None
        self.rate = SmoothedRate()
        # Whether to stop at a checkpoint and hand the job back: the worker's warm shutdown, or
        # in a Slurm allocation the time limit coming (worker.allocation)
        self.shutting_down = shutting_down

    def _retried(self, what: str, fn: Callable[[], T]) -> T:
        return call_through_outages(
            fn, f"job {self.job_id}: {what}", within_s=self.settings.outage_retry_seconds
        )

    # -- metrics ------------------------------------------------------------------------------

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        metrics_port.gpu(self.job_id, metrics)  # the worker's port has them at once
        rows = [(name, step, value) for name, value in metrics.items()]

        def write() -> None:
            with session_scope(self.settings) as session:  # one transaction per log event
                write_metrics(session, self.job_id, rows)

        self._retried(f"metrics of step {step}", write)
        reporter = self.reporter
        if reporter is not None and reporter.metric in metrics and self.verdict is None:
            value = metrics[reporter.metric]
            self.verdict = self._retried(
                f"report of {reporter.metric} at step {step} to its sweep",
                lambda: reporter.report(step, value),
            )
        if "images_per_s" in metrics:  # the job's rate (its ETA): smoothed over windows
            self.images_per_s = self.liveness.images_per_s = self.rate.add(metrics["images_per_s"])

    # -- checkpoints --------------------------------------------------------------------------

    def on_checkpoint(self, step: int, path: Path, tags: set[str]) -> None:
        """Upload and register the checkpoint, on the uploads' thread unless they are off
        (SAGAN_BACKGROUND_UPLOADS). The previous upload is waited for first, and its error raised
        here: the trainer deletes the previous file once this returns."""
        if self.stop_reason == "lost" or self.liveness.lost():
            self.uploads.drain(reraise=False)  # not our job any more: its errors neither
            return  # the job's new owner resumes from the last checkpoint we registered
        self.uploads.submit(lambda: self.store_checkpoint(step, path, set(tags)))

    def drain(self, *, reraise: bool = True) -> None:
        """Wait for the upload in flight: before the job ends, and before its run dir goes. With
        `reraise` False its error is only logged (the run already failed of its own)."""
        self.uploads.drain(reraise=reraise)

    def store_checkpoint(self, step: int, path: Path, tags: set[str]) -> None:
        # Storage first, then the rows: a registered checkpoint is always downloadable.
        started = time.perf_counter()
        key = checkpoint_key(self.job_id, step)
        size = self._retried(
            f"upload of checkpoint {step}", lambda: self.storage.put_file(key, path)
        )
        CHECKPOINT_UPLOAD_BYTES.inc(size)

        def register() -> list[str]:
            with session_scope(self.settings) as session:
                job = jobs.get_job(session, self.job_id)
                register_checkpoint(
                    session,
                    job,
                    step=step,
                    key=key,
                    size_bytes=size,
                    tags=tags | {"latest"},  # every new checkpoint is the latest one
                    resolution=self.resolution,
                    class_names=self.class_names,
                )
                tag_list = ", ".join(sorted(tags))
                jobs.add_event(
                    session, self.job_id, "checkpoint", f"step {step} [{tag_list}] {key}"
                )
                return prune_checkpoints(session, self.job_id, self.settings.keep_checkpoints)

        dropped = self._retried(f"registration of checkpoint {step}", register)
        for old in dropped:  # after the commit: no row points at them any more
            try:
                self.storage.delete(old)
            except Exception as e:  # an orphaned object costs space, not correctness
                log.warning("job %s: could not delete old checkpoint %s: %s", self.job_id, old, e)
        self.last_checkpoint_step = step
        CHECKPOINT_UPLOAD_SECONDS.observe(time.perf_counter() - started)
        log.info("job %s: checkpoint step %d stored at %s", self.job_id, step, key)

    # -- sample grids -------------------------------------------------------------------------

    def on_samples(self, step: int, png: bytes) -> None:
        key = sample_grid_key(self.job_id, step)
        self._retried(
            f"upload of the step {step} samples", lambda: self.storage.put_bytes(key, png)
        )

    def on_note(self, step: int, message: str) -> None:
        self._retried(
            f"a note at step {step}",
            lambda: self._note(message),
        )

    def on_warning(self, step: int, message: str) -> None:
        self._retried(f"a warning at step {step}", lambda: self._note(message, jobs.WARNING))

    def _note(self, message: str, kind: str = "info") -> None:
        with session_scope(self.settings) as session:
            jobs.add_event(session, self.job_id, kind, message)

    def on_protocol(self, step: int, protocol: dict) -> None:
        def write() -> None:
            with session_scope(self.settings) as session:
                write_protocol(session, self.job_id, step, protocol)

        self._retried(f"the score protocol of step {step}", write)

    # -- stopping -----------------------------------------------------------------------------

    def should_stop(self, step: int) -> bool:
        self.liveness.step = step
        log_format.step.set(step + 1)  # its log records' step: the one training (metrics' number)
        if self.shutting_down():
            self.stop_reason = "shutdown"
            return True
        if self.liveness.lost():
            self.stop_reason = "lost"  # the job was given to another worker
            return True
        if self.liveness.state == jobs.CANCELLING:
            self.stop_reason = "cancel"
            return True
        if self.verdict is not None:
            self.stop_reason = self.verdict.end
            return True
        return False
