"""A running training job's ETA: its remaining steps at its measured images/s."""

from __future__ import annotations

from store.jobs import CANCELLING, RUNNING
from store.models import Job


def images_per_step(config: dict | None) -> int:
    """Images one training step consumes, as the trainer counts `images_per_s`: batch size x D steps
    x ranks (`batch_size` is per process; gpus on each of `nodes`)."""
    config = config or {}

    def positive(key: str) -> int:
        value = config.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1

    return positive("batch_size") * positive("d_steps") * positive("gpus") * positive("nodes")


def eta_seconds(job: Job) -> float | None:
    """Seconds left of a running training job at its measured rate; None until a rate is known."""
    if job.kind != "train" or job.state not in (RUNNING, CANCELLING) or not job.images_per_s:
        return None
    if job.images_per_s <= 0:
        return None
    remaining = max(job.total_steps - job.step, 0)
    return round(remaining * images_per_step(job.config) / job.images_per_s, 1)
