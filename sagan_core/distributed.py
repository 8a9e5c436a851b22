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

torch's elastic agent starts the ranks (sagan_core.elastic, or a user's own torchrun); each joins
from the agent's environment (`join_from_env`). This module is what every rank runs in (it knows
nothing of data sets or the trainer).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

# A step's collectives must finish within this (a rank that vanished mid-step on NCCL is only
# noticed by the timeout); the control group waits longer: rank 0 evaluates, samples and
# checkpoints between steps while the others wait at the next stop flag.
STEP_TIMEOUT = timedelta(minutes=10)
CONTROL_TIMEOUT = timedelta(hours=6)


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

    def same(self, value: int) -> tuple[int, int]:
        """The lowest and highest of `value` over the ranks (the control group)."""
        t = torch.tensor([value, -value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return int(-t[1].item()), int(t[0].item())

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


def join_from_env(device_kind: str) -> Ranks:
    """Join the run's process groups from the elastic agent's (torchrun's) environment.

    RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT say where this process stands;
    a CUDA run's rank uses cuda:LOCAL_RANK (which becomes the current device), CPU ranks share
    the CPU. The step's group is NCCL on CUDA, gloo on the CPU; the control group is gloo.
    """
    device = torch.device(local_device(device_kind))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), init_method="env://", timeout=STEP_TIMEOUT)
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    return Ranks(dist.get_rank(), dist.get_world_size(), control)


def local_device(device_kind: str) -> str:
    """This rank's device: cuda:LOCAL_RANK of a CUDA run (of the devices it sees), else the CPU."""
    if device_kind.startswith("cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device_kind


def threads_per_rank() -> int:
    """CPU threads for each of this machine's ranks (LOCAL_WORLD_SIZE of them share the cores)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def under_elastic_agent() -> bool:
    """True in a process started by torchrun / the elastic agent (its place is in the env)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or {"RANK", "WORLD_SIZE"} <= os.environ.keys()


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


def no_buffer_sync() -> dict[str, bool]:
    """DDP's option not to broadcast buffers at every forward (renamed in torch 2.14)."""
    names = inspect.signature(DDP.__init__).parameters
    return (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in names
        else {"broadcast_buffers": False}
    )


NO_BUFFER_SYNC = no_buffer_sync()
