"""One rank of a job's Slurm allocation (issue #25): what every process that torchrun starts on
the allocation's nodes runs (`python -m worker.allocation JOB --worker W --run-dir DIR`).

The worker that claimed the job (worker.slurm) wrote what the run needs from the job's row to
DIR/job.json, on a file system every node shares. Each rank joins from torchrun's environment,
builds the job's config and data as a local run does (worker.training.prepare) and trains its
slice of the global batch. Global rank 0 is the job's voice, as a local worker is: it beats the
job row under the claiming worker's name, writes metrics, uploads and registers checkpoints, reads
cancels and sweep pruning (worker.training.run_job), and at the end writes how the run ended to
DIR/outcome.json for the claiming worker to settle. DIR/stop appearing (the batch script's trap
of Slurm's signal before the time limit) stops the run at a checkpoint and hands the job back.

In a gang torchrun restarted (a node or a rank was lost) every rank resumes from the run's newest
checkpoint in DIR (sagan_core.elastic.enter_rank). A rank that fails otherwise than with the job's
own error exits non-zero and leaves the rest to torchrun and Slurm: no outcome means a lost worker.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path

from store.log_format import configure_logging
from store.settings import Settings
from worker.job_life import failure_message
from worker.liveness import JobLiveness
from worker.training import FAILED, RELEASE, Outcome, is_job_own, prepare, run_job

log = logging.getLogger(__name__)

JOB_FILE, OUTCOME_FILE, STOP_FILE = "job.json", "outcome.json", "stop"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job_id")
    parser.add_argument("--worker", required=True, help="the claiming worker's name")
    parser.add_argument("--run-dir", type=Path, required=True, help="shared by every node")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_format)

    import torch

    from sagan_core.distributed import join_from_env, leave, threads_per_rank
    from sagan_core.elastic import enter_rank, leave_rank

    run_dir: Path = args.run_dir
    rank = int(os.environ["RANK"])
    restarted = enter_rank(run_dir, rank, None)  # a restarted gang: the newest checkpoint
    row = json.loads((run_dir / JOB_FILE).read_text())
    kind = device_kind(settings, row["config"])  # as the batch script asked Slurm for GPUs
    # Without the CUDA the job asks for, the ranks join on the CPU and rank 0 fails the job.
    joined = "cuda" if kind == "cuda" and torch.cuda.is_available() else "cpu"
    if joined == "cpu":
        torch.set_num_threads(threads_per_rank())
    ranks = join_from_env(joined)
    try:
        _run_rank(args, settings, row, run_dir, ranks, kind, restarted)
    except Exception as e:
        if not is_job_own(e):  # a lost peer: the gang may restart, and resume
            raise
    finally:
        leave()
    leave_rank(run_dir, rank)  # this rank's run ended (rank 0 said how)
    return 0


def device_kind(settings: Settings, config: dict) -> str:
    """ "cpu" or "cuda": what an allocation's ranks train on, and whether its batch script asks
    Slurm for GPUs (worker.slurm): the CPU if the job or the workers' setting says so."""
    return "cpu" if "cpu" in (settings.worker_device, config.get("device")) else "cuda"


def _run_rank(
    args: argparse.Namespace,
    settings: Settings,
    row: dict,
    run_dir: Path,
    ranks,  # noqa: ANN001  (sagan_core.distributed.Ranks)
    kind: str,
    restarted: Path | None,
) -> None:
    import torch

    from sagan_core.config import ConfigError
    from sagan_core.trainer import Trainer

    config = row["config"]
    want = int(config.get("nodes", 1)) * int(config.get("gpus", 1))
    error = None
    if ranks.world_size != want:  # not the job's allocation (an operator's sbatch flags)
        error = ConfigError(
            "nodes", f"the allocation started {ranks.world_size} ranks, the job asks {want}"
        )
    elif kind == "cuda" and not torch.cuda.is_available():
        error = ConfigError(
            "device",
            "the allocation's nodes have no CUDA device (SAGAN_WORKER_DEVICE=cpu, or the "
            "job's device cpu, runs on their CPUs)",
        )
    if error is not None:  # every rank sees it; rank 0 says it for the job
        if ranks.is_main:
            Outcome(FAILED, failure_message(error, None)).write(run_dir / OUTCOME_FILE)
        return
    if ranks.is_main:
        stop = run_dir / STOP_FILE
        with JobLiveness(settings, args.job_id, args.worker) as liveness:
            outcome = run_job(
                args.job_id,
                settings,
                args.worker,
                row,
                liveness,
                run_dir,
                ranks=ranks,
                resume_from=restarted,
                device=kind,
                shutting_down=stop.exists,
            )
        if outcome.end == RELEASE and stop.exists():  # say who asked (the file says)
            outcome.reason = f"{stop.read_text().strip()}; stopped at step {outcome.step}"
        outcome.write(run_dir / OUTCOME_FILE)
        log.info("job %s: rank 0 ended: %s", args.job_id, outcome.end)
        return
    work = run_dir / f"rank-{ranks.rank}"
    with ExitStack() as uses:
        run = prepare(args.job_id, settings, row, work, uses, ranks, kind)  # rank 0 says its errors
        trainer = Trainer(run.cfg, work, (), None, run.dataset, run.limits, ranks=ranks)
        trainer.run(resume_from=restarted or run.resume)


if __name__ == "__main__":
    sys.exit(main())
