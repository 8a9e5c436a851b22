"""One run on many processes (issue #15): process groups, synchronised batch norm, the ranks.

A run of N processes (ranks) is the run one process would make with N times the batch:
- every rank draws the global batch's data indices, z and classes from identically seeded
  generators and keeps its slice (`shard`), so each rank trains on different images, all ranks'
  RNG states stay equal at every step (a checkpoint of rank 0 is every rank's), and N processes
  of batch B draw what one process of batch N*B draws;
- DistributedDataParallel averages G's and D's gradients;
- with `sync_bn`, G's batch norms normalise with the statistics of the whole global batch
  (`GroupBatchNorm2d`, which runs on gloo and NCCL alike; torch's SyncBatchNorm is GPU-only).
Rank 0 is the run's voice: callbacks (metrics, checkpoints, samples, stop requests), evaluation.
A second process group on gloo (`control`) carries the per-step stop flag on the CPU, so asking
"stop?" never waits on a GPU stream.

`train_distributed` is the one launcher (the core CLI's `--gpus N` and the worker): the calling
process is rank 0 (its callbacks stay where they were made), ranks 1..N-1 are child processes
(`python -m sagan_core.distributed SPEC RANK`). A child exits when its parent dies (its stdin
closes); a child that dies makes rank 0's next collective fail, and rank 0 raises RankLostError.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

# A step's collectives must finish within this (a rank that vanished mid-step on NCCL is only
# noticed by the timeout); the control group waits longer: rank 0 evaluates, samples and
# checkpoints between steps while the others wait at the next stop flag.
STEP_TIMEOUT = timedelta(minutes=10)
CONTROL_TIMEOUT = timedelta(hours=6)
# How long the ranks have to start and meet (children import torch and build their data).
JOIN_TIMEOUT = timedelta(minutes=5)


class RankLostError(RuntimeError):
    """A rank of a multi-process run died; the run stopped at its last checkpoint."""

    def __init__(self, rank: int, detail: str):
        super().__init__(f"rank {rank} of the run was lost ({detail})")
        self.rank = rank


@dataclasses.dataclass
class Ranks:
    """This process's place in a run: rank, world size and the CPU control group."""

    rank: int
    world_size: int
    control: dist.ProcessGroup | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is True on any (the control group: CPU, no GPU sync)."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return bool(t.item())

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of `t` (the step's group: on the device, asynchronous on GPUs)."""
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.div_(self.world_size)


def shard(n: int, ranks: Ranks | None) -> slice:
    """This rank's slice of a global batch of n * world_size items."""
    if ranks is None:
        return slice(0, n)
    return slice(ranks.rank * n, (ranks.rank + 1) * n)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: str, rank: int) -> str:
    """Rank r of a CUDA run uses cuda:r (of the devices the worker sees); CPU ranks share it."""
    return f"cuda:{rank}" if device.startswith("cuda") else device


def join(rank: int, world_size: int, store: dist.Store, device: torch.device) -> Ranks:
    """Join the run's process groups (the step's group and the CPU control group)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend_for(device), store=store, rank=rank, world_size=world_size, timeout=STEP_TIMEOUT
    )
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    return Ranks(rank, world_size, control)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: the sum over ranks of the gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GroupBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole process group's batch.

    Every rank has the same batch size, so the global mean is the mean of the ranks' means and
    the global (biased) variance the mean of their variances plus the variance of their means:
    one all_reduce of 3C numbers, through autograd (its backward is the all_reduce of the
    gradients), so the gradients are those of batch norm over the concatenated batch. Outside
    training, or alone, it is nn.BatchNorm2d. Its state dict is nn.BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        world = dist.get_world_size()
        var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), unbiased=False)  # (C,), (C,)
        stats = _SumOverRanks.apply(torch.cat([mean, var, mean * mean])) / world  # (3C,)
        mean, var_of_ranks, mean_sq = stats.chunk(3)
        var = var_of_ranks + (mean_sq - mean * mean).clamp_min(0)  # (C,)
        if self.track_running_stats:
            with torch.no_grad():
                n = x.numel() // x.shape[1] * world
                self.num_batches_tracked.add_(1)
                m = self.momentum
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                unbiased = var * (n / max(n - 1, 1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        inv = torch.rsqrt(var + self.eps)  # (C,)
        scale, shift = inv, -mean * inv
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        y = x.float() * scale[None, :, None, None] + shift[None, :, None, None]
        return y.to(x.dtype)  # (B, C, H, W)


def sync_batch_norms(module: nn.Module) -> nn.Module:
    """Swap every nn.BatchNorm2d inside `module` for a GroupBatchNorm2d holding its state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = GroupBatchNorm2d(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            ).to(next(iter(child.state_dict().values())).device)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            sync_batch_norms(child)
    return module


# -- launching the ranks -------------------------------------------------------------------------


def _watch_parent() -> None:
    """Exit when the parent (rank 0) is gone: our stdin is its pipe, and EOF means it died."""

    def wait() -> None:
        try:  # the raw descriptor: a buffered read would hold a lock the interpreter's exit needs
            while os.read(0, 4096):
                pass
        finally:
            os._exit(3)

    threading.Thread(target=wait, name="sagan-parent-watch", daemon=True).start()


def _threads_per_rank(world_size: int) -> int:
    return max(1, (os.cpu_count() or 1) // world_size)


def rank_main(spec_path: str, rank: int) -> int:
    """A child rank: join, train without callbacks, exit 0; a failure's line goes to a file."""
    _watch_parent()
    spec = json.loads(Path(spec_path).read_text())
    Path(spec["run_dir"], f"rank-{rank}.pid").write_text(str(os.getpid()))  # for operators, tests
    from .config import Limits, TrainConfig
    from .data import build_dataset
    from .trainer import Trainer

    try:
        cfg = TrainConfig.from_dict(spec["config"])  # device "cuda" or "cpu": join picks cuda:r
        device = torch.device(rank_device(cfg.device, rank))
        if device.type == "cpu":
            torch.set_num_threads(_threads_per_rank(spec["world_size"]))
        store = dist.TCPStore(
            spec["host"], spec["port"], spec["world_size"], is_master=False, timeout=JOIN_TIMEOUT
        )
        ranks = join(rank, spec["world_size"], store, device)
        dataset = build_dataset(TrainConfig.from_dict(spec["data_config"]).resolved())
        limits = Limits(**spec["limits"]) if spec.get("limits") else None
        run_dir = Path(spec["run_dir"]) / f"rank-{rank}"
        trainer = Trainer(cfg, run_dir, dataset=dataset, limits=limits, ranks=ranks)
        trainer.run(resume_from=spec.get("resume_from"))
        return 0
    except Exception as e:
        traceback.print_exc()
        Path(spec["run_dir"], f"rank-{rank}.error").write_text(f"{type(e).__name__}: {e}"[:500])
        return 1
    finally:
        leave()


def train_distributed(
    config,  # noqa: ANN001  (a TrainConfig with gpus > 1)
    run_dir: Path | str,
    callbacks=(),  # noqa: ANN001
    evaluator=None,  # noqa: ANN001
    dataset=None,  # noqa: ANN001
    limits=None,  # noqa: ANN001
    resume_from: Path | str | None = None,
    data_config=None,  # noqa: ANN001  (what the children build their dataset from)
):
    """Run `config` on config.gpus processes, this one rank 0; returns rank 0's TrainResult.

    Rank 0 works in `run_dir` (its checkpoints in run_dir/checkpoints, as a one-process run's),
    the others in run_dir/rank-N. `data_config` is the config the children build their dataset
    with (default `config`; the worker passes a stored dataset's local packed file). Raises
    RankLostError if a child died.
    """
    from .config import ConfigError
    from .device import resolve_device
    from .trainer import Trainer

    cfg = config.resolved()
    world = cfg.gpus
    # Every rank's config says "cuda" (or "cpu"); each joins on its own cuda:r, which becomes its
    # current device, and the Trainer takes that (the config itself refuses cuda:N for gpus > 1).
    kind = resolve_device(cfg.device).type
    if kind not in ("cuda", "cpu"):
        raise ConfigError("gpus", f"a run of gpus={world} runs on CUDA or the CPU, not {kind}")
    cfg = dataclasses.replace(cfg, device=kind)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(rank_device(kind, 0))
    store = dist.TCPStore(
        "127.0.0.1", 0, world, is_master=True, timeout=JOIN_TIMEOUT, wait_for_workers=False
    )
    spec = {
        "config": cfg.to_dict(),
        "data_config": (data_config or cfg).to_dict(),
        "world_size": world,
        "host": "127.0.0.1",
        "port": store.port,
        "run_dir": str(run_dir),
        "resume_from": str(resume_from) if resume_from else None,
        "limits": dataclasses.asdict(limits) if limits is not None else None,
    }
    spec_path = run_dir / "ranks.json"
    spec_path.write_text(json.dumps(spec))
    children: list[subprocess.Popen] = []
    threads = torch.get_num_threads()
    try:
        for rank in range(1, world):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sagan_core.distributed", str(spec_path), str(rank)],
                    stdin=subprocess.PIPE,
                )
            )
        if device.type == "cpu":
            torch.set_num_threads(_threads_per_rank(world))
        try:
            ranks = join(0, world, store, device)
            trainer = Trainer(cfg, run_dir, callbacks, evaluator, dataset, limits, ranks=ranks)
            return trainer.run(resume_from=resume_from)
        except Exception as e:
            lost = None if _is_job_error(e) else _lost_child(children, run_dir)
            if lost is not None:
                raise RankLostError(*lost) from e
            raise
    finally:
        leave()
        torch.set_num_threads(threads)
        _stop(children)


def _is_job_error(error: BaseException) -> bool:
    """The run's own failures (the same on every rank), which a lost child does not explain."""
    from .config import ConfigError
    from .data import DatasetError
    from .trainer import DivergedError

    return isinstance(error, ConfigError | DatasetError | DivergedError)


def _lost_child(children: Sequence[subprocess.Popen], run_dir: Path) -> tuple[int, str] | None:
    """(rank, what happened) of the first child that died, waiting briefly for it to be seen."""
    for rank, child in enumerate(children, start=1):
        try:
            code = child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue
        if code != 0:
            error = run_dir / f"rank-{rank}.error"
            how = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
            if error.exists():
                how += f": {error.read_text().strip()}"
            return rank, how
    return None


def _stop(children: Sequence[subprocess.Popen]) -> None:
    """Close the children's pipes (they exit), then wait; kill any that linger."""
    for child in children:
        if child.stdin is not None:
            child.stdin.close()
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


if __name__ == "__main__":
    sys.exit(rank_main(sys.argv[1], int(sys.argv[2])))
