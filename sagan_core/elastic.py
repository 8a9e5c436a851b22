"""The ranks of a multi-process run, started by torch's elastic agent (issue #25).

`launch_ranks` (what `train_distributed` runs in the caller: the worker's task, the core CLI)
starts config.gpus local workers with `torch.distributed.launcher.api.elastic_launch` and a c10d
rendezvous on 127.0.0.1; the agent watches them and ends the others when one dies (restarting
the gang up to `max_restarts` times). Each worker runs `rank_main`: it joins from the agent's
environment (sagan_core.distributed.join_from_env) and trains; rank 0 reports through
sagan_core.rank_channel to the caller's callbacks and evaluator, which stay in the caller.

A failed gang is told apart as the service needs it:
- a callback of the caller failed (an outage of an upload): that very exception;
- a run's own error (ConfigError, DatasetError, DivergedError: the same on every rank): that
  error, rebuilt in the caller from the rank's report (its type, arguments and fields);
- otherwise a rank was lost: RankLostError(rank, "killed by signal 9" / "exit code 1: ...").
Each rank writes `rank-N.pid` (operators, tests) and, when it fails with a Python exception,
`rank-N.error` (a pickled report) in the run directory. A rank failing with an exception that is
not the run's own waits a moment before it exits, so that a peer whose death caused it (a
collective that lost its peer) is the failure the agent sees first.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import pickle
import signal
import socket
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

import torch

from .checkpoint import newest_checkpoint_file
from .config import ConfigError, Limits, TrainConfig
from .data import DatasetError, build_dataset
from .distributed import RankLostError, join_from_env, leave, threads_per_rank
from .rank_channel import Channel, ChannelServer, RemoteCallbacks, RemoteEvaluator
from .trainer import DivergedError, Trainer

# The run's own failures (the same on every rank), which a lost rank does not explain.
JOB_ERRORS = {cls.__name__: cls for cls in (ConfigError, DatasetError, DivergedError)}
# How long a rank failing with another exception waits before it exits (see the module's doc).
LINGER_S = 2.0
# Elastic's process context takes over the signals it is told in the caller's main thread (the
# default: SIGTERM, SIGINT, SIGHUP, SIGQUIT): only this one, and it is put back after the run.
AGENT_SIGNAL = "SIGUSR2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def enter_rank(run_dir: Path, rank: int, resume: Path | str | None) -> Path | str | None:
    """What a rank does first in its run directory (ours or a user's torchrun's): it writes
    rank-N.pid (operators, tests) and returns the checkpoint to start from. In a gang the agent
    restarted (a rank or a node was lost), that is the run's newest checkpoint, so every rank takes
    the steps the lost gang would have taken (on several nodes run_dir is a shared file system).

    A restart is told by rank-N.gang holding this run's id (TORCHELASTIC_RUN_ID, the same on
    every node and in every gang of one run), written by the gang before: not by
    TORCHELASTIC_RESTART_COUNT, which counts one agent's own restarts, and an agent that restarts
    for another node's failure (a membership change) does not count it. `leave_rank` removes the
    mark when the rank ends its run, so a later run of the same id starts as told.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"rank-{rank}.pid").write_text(str(os.getpid()))
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id:
        mark = run_dir / f"rank-{rank}.gang"
        restarted = restarted or (mark.exists() and mark.read_text() == run_id)
        mark.write_text(run_id)
    if restarted:
        return newest_checkpoint_file(run_dir) or resume
    return resume


def leave_rank(run_dir: Path, rank: int) -> None:
    """The rank ended its run (whatever the outcome, it was not lost): no gang to resume."""
    (run_dir / f"rank-{rank}.gang").unlink(missing_ok=True)


def rank_main(spec: dict, channel: Channel):  # noqa: ANN201  (rank 0: its TrainResult)
    """One worker of the agent: join from the environment, train, leave (rank 0 reports)."""
    rank = int(os.environ["RANK"])
    run_dir = Path(spec["run_dir"])
    resume = enter_rank(run_dir, rank, spec.get("resume_from"))
    try:
        cfg = TrainConfig.from_dict(spec["config"])
        if cfg.device == "cpu":
            torch.set_num_threads(threads_per_rank())
        ranks = join_from_env(cfg.device)
        dataset = build_dataset(TrainConfig.from_dict(spec["data_config"]).resolved())
        limits = Limits(**spec["limits"]) if spec.get("limits") else None
        if ranks.is_main:
            callbacks, work_dir = RemoteCallbacks(channel), run_dir
            evaluator = RemoteEvaluator(channel) if spec["evaluate"] else None
        else:
            callbacks, work_dir, evaluator = (), run_dir / f"rank-{rank}", None
        trainer = Trainer(cfg, work_dir, callbacks, evaluator, dataset, limits, ranks=ranks)
        if evaluator is not None:
            evaluator.config = trainer.config.to_dict()
        result = trainer.run(resume_from=resume)
        leave_rank(run_dir, rank)
        return result if ranks.is_main else None
    except Exception as e:
        traceback.print_exc()
        write_report(run_dir / f"rank-{rank}.error", e)
        if type(e).__name__ not in JOB_ERRORS:
            time.sleep(LINGER_S)
        else:
            leave_rank(run_dir, rank)
        raise
    finally:
        leave()


def write_report(path: Path, error: BaseException) -> None:
    """What the caller needs to tell the failure and rebuild a run's own error."""
    cls = type(error)
    try:
        state = pickle.dumps((error.args, dict(vars(error))))
    except Exception:
        state = None
    report = {
        "type": cls.__name__,
        "module": cls.__module__,
        "line": f"{cls.__name__}: {error}"[:500],
        "state": state,
    }
    path.write_bytes(pickle.dumps(report))


def read_report(path: Path) -> dict | None:
    try:
        return pickle.loads(path.read_bytes())
    except (OSError, EOFError, pickle.UnpicklingError):
        return None


def rebuild(report: dict) -> Exception:
    """The rank's exception in the caller: a sagan_core or builtin type, else a RuntimeError."""
    cls = JOB_ERRORS.get(report["type"])
    if cls is None and report["module"] == "builtins":
        cls = getattr(builtins, report["type"], None)
    if cls is None or not issubclass(cls, Exception) or report["state"] is None:
        return RuntimeError(report["line"])
    try:
        args, fields = pickle.loads(report["state"])
        error = cls.__new__(cls)
        error.args = args
        error.__dict__.update(fields)
        return error
    except Exception:
        return RuntimeError(report["line"])


def failure_error(failures: dict, run_dir: Path, world: int) -> Exception:
    """The exception a failed gang stands for (failures: elastic's {rank: ProcessFailure})."""
    reports = {r: read_report(run_dir / f"rank-{r}.error") for r in range(world)}
    for rank in range(world):  # the run's own error, whichever rank said it
        if reports[rank] is not None and reports[rank]["type"] in JOB_ERRORS:
            return rebuild(reports[rank])
    rank, failure = min(failures.items())
    code = failure.exitcode
    how = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
    report = reports.get(rank)
    if report is None:
        return RankLostError(rank, how)
    if rank == 0:  # rank 0's own failure (had a peer died first, the agent would say that one)
        return rebuild(report)
    return RankLostError(rank, f"{how}: {report['line']}")


def launch_ranks(
    cfg: TrainConfig,
    run_dir: Path,
    callbacks,  # noqa: ANN001  (a TrainerCallbacks: the caller's, e.g. a CallbackList)
    evaluator=None,  # noqa: ANN001
    limits: Limits | None = None,
    resume_from: Path | str | None = None,
    data_config: TrainConfig | None = None,
    max_restarts: int = 0,
):  # noqa: ANN201  (rank 0's TrainResult)
    """Run `cfg` (device "cuda" or "cpu") on cfg.gpus workers of the elastic agent."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    world = cfg.gpus
    for stale in run_dir.glob("rank-*.error"):  # a previous attempt's
        stale.unlink()
    spec = {
        "config": cfg.to_dict(),
        "data_config": (data_config or cfg).to_dict(),
        "run_dir": str(run_dir),
        "resume_from": str(resume_from) if resume_from else None,
        "limits": dataclasses.asdict(limits) if limits is not None else None,
        "evaluate": evaluator is not None,
    }
    channel = Channel()
    device = torch.device("cuda", 0) if cfg.device == "cuda" else torch.device(cfg.device)
    failed = None
    with (
        tempfile.TemporaryDirectory(prefix="sagan-elastic-") as logs,
        _signals_kept(),
        ChannelServer(channel, callbacks, evaluator, device) as server,
    ):
        config = _launch_config(
            LaunchConfig,
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=world,
            run_id=f"sagan-{uuid.uuid4().hex[:12]}",
            rdzv_backend="c10d",
            rdzv_endpoint=f"127.0.0.1:{free_port()}",
            max_restarts=max_restarts,
            monitor_interval=0.1,
            start_method="spawn",
            logs_specs=DefaultLogsSpecs(log_dir=logs),
            local_addr="127.0.0.1",
            # SIGTERM and SIGINT stay the caller's (the worker's warm shutdown asks rank 0 to
            # stop at a checkpoint through should_stop); the ranks end with it by PDEATHSIG.
            signals_to_handle=AGENT_SIGNAL,
        )
        try:
            results = elastic_launch(config, rank_main)(spec, channel)
        except ChildFailedError as e:
            failed = e
    if server.error is not None:
        raise server.error
    if failed is not None:
        raise failure_error(failed.failures, run_dir, world) from failed
    return results[0]


def _launch_config(launch_config, **fields):  # noqa: ANN001, ANN003, ANN202
    """LaunchConfig without the fields this torch lacks (pyproject allows torch 2.4 on; a GPU
    image may hold an older torch than our pin). Without `signals_to_handle`, the agent reads
    the same choice from its environment variable, which _signals_kept puts back after."""
    known = {f.name for f in dataclasses.fields(launch_config)}
    if "signals_to_handle" in fields and "signals_to_handle" not in known:
        os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = fields["signals_to_handle"]
    return launch_config(**{k: v for k, v in fields.items() if k in known})


class _signals_kept:  # noqa: N801  (a context manager used as `with _signals_kept():`)
    """Elastic's process context takes AGENT_SIGNAL in the main thread: put it back after."""

    def __enter__(self) -> None:
        self.env = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")
        self.saved = {}
        if threading.current_thread() is threading.main_thread():
            sig = getattr(signal, AGENT_SIGNAL, None)
            if sig is not None:
                self.saved[sig] = signal.getsignal(sig)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            if handler is not None:
                signal.signal(sig, handler)
        if self.env is None:
            os.environ.pop("TORCHELASTIC_SIGNALS_TO_HANDLE", None)
        else:
            os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = self.env
