"""The sample grids a training job renders every `sample_every` steps, kept in storage with the job
(they outlive the worker's temporary run directory), addressed by step."""

from __future__ import annotations

import re

from store.storage import Storage

STEP_RE = re.compile(r"/step-(\d{8})\.png$")


def sample_grid_key(job_id: str, step: int) -> str:
    return f"jobs/{job_id}/samples/step-{step:08d}.png"


def sample_grid_steps(storage: Storage, job_id: str) -> list[int]:
    """Steps of the job's stored grids, in order."""
    keys = storage.list(f"jobs/{job_id}/samples/")
    return sorted(int(m.group(1)) for key in keys if (m := STEP_RE.search(key)))
