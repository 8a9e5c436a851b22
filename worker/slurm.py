"""SAGAN_LAUNCHER=slurm (issue #25): the worker that claimed a train job runs it as one Slurm
allocation and keeps the job's claim, heartbeat and state machine while it runs.

    claim (worker.tasks) -> job.json + batch script in the job's run directory (shared by the
    nodes) -> sbatch --parsable -> watch squeue (scontrol once it left the queue) -> settle the
    Outcome rank 0 wrote (worker.allocation), or: no outcome = a lost worker

The batch script starts one task per node (srun), each a torchrun agent of `gpus` processes with a
c10d rendezvous on the first node, running `python -m worker.allocation`. What happens when:
- the allocation waits in Slurm's queue past SAGAN_SLURM_QUEUE_WAIT_SECONDS: scancel, and the job
  goes back to the service's queue (a release: not counted against SAGAN_MAX_ATTEMPTS);
- a node or rank dies: torchrun restarts the gang from the newest checkpoint while
  SAGAN_SLURM_MAX_RESTARTS remain; past that the allocation fails without an outcome, and the
  job is a lost worker (requeued while attempts remain);
- the job is cancelled: rank 0 reads it from the job row and stops at a checkpoint; an allocation
  still pending, or one that has not ended CANCEL_GRACE_S later, is scancel'ed;
- the time limit nears: Slurm signals the batch shell (--signal B:USR1@N), which creates the run
  directory's `stop` file; rank 0 checkpoints and the job goes back to the queue. The worker's own
  warm shutdown does the same;
- squeue and scontrol fail (slurmctld down): the worker keeps asking; the job is not failed.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from store import jobs
from store.settings import Settings
from worker.allocation import JOB_FILE, OUTCOME_FILE, STOP_FILE, device_kind
from worker.callbacks import worker_shutting_down
from worker.liveness import JobLiveness
from worker.training import CANCELLED, FAILED, LOSE, RELEASE, Outcome, settle

log = logging.getLogger(__name__)

PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
ALIVE = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
CANCEL_GRACE_S = 120.0  # a cancelled job's rank 0 stops at its next step; then scancel
RDZV_PORT_BASE = 29500  # + the allocation's id mod 10,000: two allocations on a node differ
COMMAND_TIMEOUT_S = 60.0
TIME_LIMIT = "the Slurm allocation nears its time limit (sbatch --signal)"


class SlurmError(RuntimeError):
    """sbatch refused the allocation (its message), or Slurm's commands are not installed."""


def run_root(settings: Settings) -> Path:
    return (settings.slurm_run_root or settings.data_dir / "runs").resolve()


def batch_script(job_id: str, worker: str, config: dict, settings: Settings, work: Path) -> str:
    """The allocation's batch script: one torchrun agent per node, rank 0 the job's voice."""
    nodes, gpus = int(config.get("nodes", 1)), int(config.get("gpus", 1))
    python = settings.slurm_python or sys.executable
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name=sagan-{job_id[:8]}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --output={work}/slurm-%j.out",
    ]
    if device_kind(settings, config) == "cuda":
        lines.append(f"#SBATCH --gpus-per-node={gpus}")
    if settings.slurm_signal_seconds:
        lines.append(f"#SBATCH --signal=B:USR1@{settings.slurm_signal_seconds}")
    q = shlex.quote
    lines += [
        "set -u",
        # The time limit nears: rank 0 checkpoints and the job goes back to the queue.
        f"trap {q(f'echo {q(TIME_LIMIT)} > {q(str(work / STOP_FILE))}')} USR1",
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        'addr=$(scontrol show node "$head" | grep -o "NodeAddr=[^ ]*" | cut -d= -f2)',
        f"port=$(( {RDZV_PORT_BASE} + SLURM_JOB_ID % 10000 ))",
        # Each agent counts its own restarts; a store shared with the ranks then hands restarted
        # ranks a stale attempt's addresses (pytorch/pytorch#135712).
        "export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1",
        "srun --kill-on-bad-exit=1 --ntasks-per-node=1 " + shlex.join(agent_command(
            python, nodes, gpus, settings.slurm_max_restarts, job_id, worker, work
        )).replace("RDZV_ENDPOINT", '"$addr:$port"').replace("RDZV_ID", '"sagan-$SLURM_JOB_ID"')
        + " &",
        # bash runs a trap only between commands: wait in the background, again after a signal.
        "step=$!",
        "wait $step; rc=$?",
        "while kill -0 $step 2>/dev/null; do wait $step; rc=$?; done",
        "exit $rc",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def agent_command(
    python: str, nodes: int, gpus: int, restarts: int, job_id: str, worker: str, work: Path
) -> list[str]:
    """One node's torchrun agent (RDZV_ENDPOINT, RDZV_ID: filled in by the batch script; the
    Kubernetes manifest, worker.kubernetes, runs the same command)."""
    return [
        python, "-m", "torch.distributed.run",
        f"--nnodes={nodes}", f"--nproc-per-node={gpus}",
        "--rdzv-backend=c10d", "--rdzv-endpoint=RDZV_ENDPOINT", "--rdzv-id=RDZV_ID",
        f"--max-restarts={restarts}",
        "-m", "worker.allocation", job_id, "--worker", worker, "--run-dir", str(work),
    ]  # fmt: skip


def _slurm(args: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except FileNotFoundError as e:
        raise SlurmError(f"SAGAN_LAUNCHER=slurm, but {args[0]} is not on this worker's PATH") from e


def submit(script: Path, settings: Settings) -> str:
    """sbatch the script; the allocation's id, or SlurmError with sbatch's own message."""
    args = ["sbatch", "--parsable"]
    if settings.slurm_partition:
        args.append(f"--partition={settings.slurm_partition}")
    if settings.slurm_time_limit:
        args.append(f"--time={settings.slurm_time_limit}")
    args += shlex.split(settings.slurm_sbatch_args) + [str(script)]
    done = _slurm(args)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise SlurmError(f"sbatch refused the allocation: {message[-1] if message else '?'}")
    return done.stdout.strip().split(";")[0]


def allocation_state(slurm_id: str) -> str | None:
    """PENDING, RUNNING, COMPLETED, FAILED, ... or None when Slurm could not be asked."""
    try:
        queued = _slurm(["squeue", "--noheader", "--jobs", slurm_id, "--format=%T"])
        if queued.returncode == 0 and queued.stdout.strip():
            return queued.stdout.split()[0]
        shown = _slurm(["scontrol", "show", "job", slurm_id, "--oneliner"])
    except (subprocess.TimeoutExpired, SlurmError) as e:
        log.warning("allocation %s: Slurm not answering (%s)", slurm_id, e)
        return None
    for field in shown.stdout.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    if "Invalid job id" in shown.stderr:  # left slurmctld's memory (MinJobAge): it has ended
        return "ENDED"
    log.warning("allocation %s: Slurm not answering (%s)", slurm_id, shown.stderr.strip())
    return None


def cancel(slurm_id: str) -> None:
    try:
        _slurm(["scancel", slurm_id])
    except (subprocess.TimeoutExpired, SlurmError) as e:
        log.warning("allocation %s: scancel failed (%s)", slurm_id, e)


def train_on_slurm(
    job_id: str, settings: Settings, worker: str, row: dict, liveness: JobLiveness
) -> str | None:
    """Run the claimed job as one allocation; returns the state it left the job in."""
    work = run_root(settings) / f"job-{job_id}"
    shutil.rmtree(work, ignore_errors=True)  # an earlier attempt's
    work.mkdir(parents=True)
    (work / JOB_FILE).write_text(json.dumps(row))
    script = work / "allocation.sh"
    script.write_text(batch_script(job_id, worker, row["config"], settings, work))
    try:
        slurm_id = submit(script, settings)
    except SlurmError as e:
        shutil.rmtree(work, ignore_errors=True)
        return settle(settings, job_id, worker, row, Outcome(FAILED, str(e)))
    log.info("job %s: Slurm allocation %s submitted (%s)", job_id, slurm_id, work)
    try:
        outcome = watch(job_id, slurm_id, settings, liveness, work)
    finally:
        if (work / OUTCOME_FILE).exists() or liveness.lost():
            shutil.rmtree(work, ignore_errors=True)
    return settle(settings, job_id, worker, row, outcome) if outcome is not None else None


def watch(
    job_id: str, slurm_id: str, settings: Settings, liveness: JobLiveness, work: Path
) -> Outcome | None:
    """Poll the allocation to its end; the Outcome to settle (None: the job is not ours now)."""
    submitted = time.monotonic()
    cancel_seen: float | None = None
    state = None
    while True:
        state = allocation_state(slurm_id) or state
        pending = state is None or state in PENDING
        if not pending and state not in ALIVE:
            break
        now = time.monotonic()
        if liveness.lost():  # another worker owns the job (this one was thought dead)
            cancel(slurm_id)
            log.warning("job %s: taken over; allocation %s cancelled", job_id, slurm_id)
            return None
        if liveness.state == jobs.CANCELLING:
            if cancel_seen is None:
                cancel_seen = now  # rank 0 reads it too, and stops at a checkpoint
            if pending or now - cancel_seen > CANCEL_GRACE_S:
                cancel(slurm_id)
                return Outcome(CANCELLED)
        if worker_shutting_down() and not (work / STOP_FILE).exists():
            # rank 0 checkpoints; the job goes back to the queue
            (work / STOP_FILE).write_text(f"worker {liveness.worker} shut down")
            if pending:
                cancel(slurm_id)
                return Outcome(RELEASE, f"worker shut down before allocation {slurm_id} started")
        if pending and now - submitted > settings.slurm_queue_wait_seconds:
            cancel(slurm_id)
            wait = settings.slurm_queue_wait_seconds
            return Outcome(
                RELEASE,
                f"Slurm allocation {slurm_id} did not start within {wait:g} s "
                "(SAGAN_SLURM_QUEUE_WAIT_SECONDS)",
            )
        time.sleep(settings.slurm_poll_seconds)
    outcome = Outcome.read(work / OUTCOME_FILE)
    if outcome is not None:
        return outcome
    tail = _log_tail(work)
    log.warning("job %s: allocation %s ended %s without an outcome:\n%s", job_id, slurm_id,
                state, tail)  # fmt: skip
    return Outcome(
        LOSE,
        f"Slurm allocation {slurm_id} ended {state} without a result; resumes from its last "
        "registered checkpoint",
    )


def _log_tail(work: Path, lines: int = 60) -> str:
    found = sorted(work.glob("slurm-*.out"))
    if not found:
        return "(no allocation log)"
    return "\n".join(found[-1].read_text(errors="replace").splitlines()[-lines:])
