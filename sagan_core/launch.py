"""A multi-process run's one entry (issues #15, #25): `train_distributed`, for the core CLI's
`--gpus N` and the worker. The caller is no rank: torch's elastic agent starts config.gpus local
workers (sagan_core.elastic), and the caller's callbacks and evaluator answer rank 0 through
sagan_core.rank_channel. What every rank runs in is sagan_core.distributed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .callbacks import CallbackList, TrainerCallbacks
from .config import ConfigError
from .device import resolve_device
from .distributed import RankLostError
from .elastic import launch_ranks

__all__ = ["ONE_MACHINE", "RankLostError", "train_distributed"]

ONE_MACHINE = (
    "a run of nodes={nodes} is started on its machines by a cluster launcher (torchrun on each "
    "node, or the service's SAGAN_LAUNCHER=slurm); this starts ranks on one machine"
)


def train_distributed(
    config,  # noqa: ANN001  (a TrainConfig with gpus > 1)
    run_dir: Path | str,
    callbacks=(),  # noqa: ANN001
    evaluator=None,  # noqa: ANN001
    dataset=None,  # noqa: ANN001  (unused: every rank builds its own from data_config)
    limits=None,  # noqa: ANN001
    resume_from: Path | str | None = None,
    data_config=None,  # noqa: ANN001  (what the ranks build their dataset from)
    max_restarts: int = 0,
):
    """Run `config` on config.gpus processes of torch's elastic agent; returns rank 0's result.

    Rank 0 works in `run_dir` (its checkpoints in run_dir/checkpoints, as a one-process run's),
    the others in run_dir/rank-N; the callbacks and the evaluator run in this process. The
    ranks build their dataset from `data_config` (default `config`; the worker passes a stored
    dataset's local packed file). Raises what a callback raised, the run's own ConfigError,
    DatasetError or DivergedError, or RankLostError if a rank died. `max_restarts`: how often
    the agent may restart the gang (from the run's newest checkpoint) before that.
    """
    config.validate(limits)
    if config.nodes > 1:
        raise ConfigError("nodes", ONE_MACHINE.format(nodes=config.nodes))
    cfg = config.resolved()
    world = cfg.gpus
    # Every rank's config says "cuda" (or "cpu"); each joins on its own cuda:LOCAL_RANK, which
    # becomes its current device (the config itself refuses cuda:N for gpus > 1).
    kind = resolve_device(cfg.device).type
    if kind not in ("cuda", "cpu"):
        raise ConfigError("gpus", f"a run of gpus={world} runs on CUDA or the CPU, not {kind}")
    cfg = dataclasses.replace(cfg, device=kind)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(callbacks, TrainerCallbacks):
        callbacks = [callbacks]
    return launch_ranks(
        cfg,
        run_dir,
        CallbackList(callbacks),
        evaluator,
        limits,
        resume_from,
        data_config,
        max_restarts=max_restarts,
    )
