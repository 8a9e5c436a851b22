"""The operator's bounds on one job's config (`Limits`), the config fields each bounds, and the
setting that sets each: torch-free; `sagan_core.config` validates against them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Integer fields must fit a 32-bit signed column (the service stores steps in INTEGER columns).
MAX_INT = 2**31 - 1


@dataclass(frozen=True)
class Limits:
    """The most one job may ask for: per-field bounds sized for one GPU.

    Each bound is a sanity limit on one field (a batch of 10**6 or a width of 10**5 only ever
    ends in an out-of-memory worker), not a guarantee that every combination fits; a run that
    still runs out of memory fails its job. The service reads them from SAGAN_MAX_* (see
    `store.settings.Settings.limits`); `TrainConfig.validate()` without limits, and so the core
    CLI and a `Trainer` built without them, uses these defaults.
    """

    batch_size: int = 2048  # SAGAN_MAX_BATCH_SIZE; the paper trains with 256
    channels: int = 256  # SAGAN_MAX_CHANNELS: g_ch and d_ch; the paper's ch is 64
    z_dim: int = 1024  # SAGAN_MAX_Z_DIM; the paper's is 128
    classes: int = 100_000  # SAGAN_MAX_CLASSES: num_classes; ImageNet-21k has 21,841
    steps: int = MAX_INT  # SAGAN_MAX_STEPS: a long run costs time, not memory, and is cancellable
    d_steps: int = 10  # SAGAN_MAX_D_STEPS; the paper uses 1 (TTUR), WGAN-GP used 5
    eval_samples: int = 100_000  # SAGAN_MAX_EVAL_SAMPLES; the usual FID uses 50k
    reference_samples: int = 200_000  # SAGAN_MAX_REFERENCE_SAMPLES: eval_reference_samples
    data_root_chars: int = 1024  # SAGAN_MAX_DATA_ROOT_CHARS: the length of data_root
    gpus: int = 64  # processes of one run; the service's is its largest pool (SAGAN_GPU_POOLS)
    nodes: int = 1024  # SAGAN_MAX_NODES: machines of one run (a cluster launcher's, issue #25)
    # What one run may record (#24: steps 2**31-1 with sample_every 1 was accepted): sample grids
    # (steps / sample_every) and log lines (steps / log_every, ~16 metric rows each). Unbounded in
    # the core (a benchmark runs "forever" and stops itself); the service's are its settings'.
    sample_grids: int = MAX_INT  # SAGAN_MAX_SAMPLE_GRIDS (the service's default: 1,000)
    log_lines: int = MAX_INT  # SAGAN_MAX_LOG_LINES (the service's default: 100,000)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_INT:
                raise ValueError(f"{setting_name(f.name)}: must be an integer in 1..{MAX_INT}")

    def bound(self, field: str) -> tuple[int, str] | None:
        """The limit on a config field and the setting that sets it; None if it has none."""
        name = LIMITED_FIELDS.get(field)
        return None if name is None else (getattr(self, name), setting_name(name))


# Config field -> the Limits attribute that bounds it.
LIMITED_FIELDS = {
    "batch_size": "batch_size",
    "g_ch": "channels",
    "d_ch": "channels",
    "z_dim": "z_dim",
    "num_classes": "classes",
    "steps": "steps",
    "d_steps": "d_steps",
    "eval_samples": "eval_samples",
    "eval_reference_samples": "reference_samples",
    "gpus": "gpus",
    "nodes": "nodes",
}


def setting_name(limit: str) -> str:
    """The service's environment variable for a Limits attribute (SAGAN_MAX_BATCH_SIZE)."""
    if limit == "gpus":  # the largest worker pool: no worker could run more
        return "SAGAN_GPU_POOLS (the GPUs of the largest worker pool)"
    if limit == "nodes":  # one machine unless a cluster launcher places the ranks
        return "SAGAN_MAX_NODES with SAGAN_LAUNCHER=slurm; SAGAN_LAUNCHER=local runs one machine"
    return f"SAGAN_MAX_{limit.upper()}"
