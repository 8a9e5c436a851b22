"""One run on many processes (issue #15), on the CPU with gloo.

Two ranks of batch B/2 take the step one process takes with batch B: the same losses, the same
gradients of G and D, the same batch-norm statistics (with sync_bn). A run launched on two
processes reports through rank 0 alone, resumes exactly, and a rank that dies stops the run with
RankLostError, which the service counts as a lost worker. The ranks are torch's elastic agent's
(issue #25); the caller's callbacks answer rank 0 (tests/core/test_elastic.py: the channel).
"""

import os
import signal
import socket

import pytest
import torch
import torch.multiprocessing as mp

from sagan_core.checkpoint import load_checkpoint
from sagan_core.config import ConfigError, TrainConfig
from sagan_core.distributed import (
    GroupBatchNorm2d,
    RankLostError,
    join_from_env,
    leave,
    sync_batch_norms,
)
from sagan_core.launch import train_distributed
from sagan_core.trainer import Trainer, TrainerCallbacks


def config(**overrides) -> TrainConfig:
    fields = dict(
        dataset="digits", resolution=32, g_ch=2, d_ch=2, z_dim=8, batch_size=8, steps=4,
        log_every=1, checkpoint_every=2, sample_every=0, ema_start=1, ema_decay=0.9,
        variety_every=0, device="cpu", seed=5, diversity_weight=0.0, path="plain",
    )  # fmt: skip
    fields.update(overrides)
    return TrainConfig(**fields)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_as(rank: int, world: int, port: int):
    """Join as the elastic agent's worker `rank` would (its environment), on the CPU."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    return join_from_env("cpu")


def grads(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in net.parameters()])


def bn_stats(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat(
        [
            torch.cat([m.running_mean, m.running_var])
            for m in net.modules()
            if isinstance(m, torch.nn.BatchNorm2d)
        ]
    )


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _one_step(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    """A rank of the step test (spawned): one train_step, then its statistics and gradients."""
    torch.set_num_threads(1)
    ranks = join_as(rank, world, port)
    try:
        trainer = Trainer(TrainConfig.from_dict(cfg), os.path.join(out, f"r{rank}"), ranks=ranks)
        stats = trainer.train_step()
        torch.save(
            {
                "stats": {k: float(v) for k, v in stats.items()},
                "g": grads(trainer.G),
                "d": grads(trainer.D),
                "bn": bn_stats(trainer.G),
                "synced": any(isinstance(m, GroupBatchNorm2d) for m in trainer.G.modules()),
            },
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        leave()


def two_rank_step(tmp_path, cfg: TrainConfig) -> list[dict]:
    mp.spawn(_one_step, args=(2, free_port(), cfg.to_dict(), str(tmp_path)), nprocs=2)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


def one_process_step(tmp_path, cfg: TrainConfig) -> dict:
    torch.set_num_threads(1)
    trainer = Trainer(cfg, tmp_path / "one")
    stats = {k: float(v) for k, v in trainer.train_step().items()}
    return {"stats": stats, "g": grads(trainer.G), "d": grads(trainer.D), "bn": bn_stats(trainer.G)}


# Augmentation always on (p = 1): each rank draws the global batch's transforms and keeps its rows.
AUGMENTED = {"diff_augment": "translation,color,cutout", "ada_target": 0.0}


@pytest.mark.parametrize(
    "z_mode, augment", [("input", {}), ("hierarchical", {}), ("input", AUGMENTED)]
)
def test_two_ranks_of_half_the_batch_take_the_step_of_one_process_with_sync_bn(
    tmp_path, z_mode, augment
):
    one = one_process_step(tmp_path, config(batch_size=8, z_mode=z_mode, **augment))
    ranks = two_rank_step(
        tmp_path, config(batch_size=4, gpus=2, sync_bn=True, z_mode=z_mode, **augment)
    )
    for got in ranks:
        assert got["synced"]
        for name in ("d_loss", "g_loss", "d_real", "d_fake"):  # the global batch's means
            assert got["stats"][name] == pytest.approx(one["stats"][name], rel=1e-5, abs=1e-6)
        assert rel(got["d"], one["d"]) < 1e-5  # DDP's averaged gradients, D step
        assert rel(got["g"], one["g"]) < 1e-5  # and G step (through the synced batch norms)
        assert rel(got["bn"], one["bn"]) < 1e-5  # running statistics of the global batch
    assert torch.equal(ranks[0]["g"], ranks[1]["g"]) and torch.equal(ranks[0]["d"], ranks[1]["d"])


def test_without_sync_bn_each_rank_normalises_its_own_half(tmp_path):
    one = one_process_step(tmp_path, config(batch_size=8))
    ranks = two_rank_step(tmp_path, config(batch_size=4, gpus=2, sync_bn=False))
    assert not ranks[0]["synced"]
    assert rel(ranks[0]["g"], one["g"]) > 1e-3  # what sync_bn is for
    assert rel(ranks[0]["d"], one["d"]) > 1e-3  # D saw other fakes: G's BN used other stats
    assert torch.equal(ranks[0]["g"], ranks[1]["g"])  # still averaged: the ranks agree


def _group_bn(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    join_as(rank, world, port)
    try:
        torch.manual_seed(0)
        x = (torch.randn(6, 5, 4, 4) * 3 + 2).requires_grad_(True)  # the whole batch, every rank
        bn = GroupBatchNorm2d(5)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
        w = torch.randn(6, 5, 4, 4)
        part = slice(rank * 3, rank * 3 + 3)
        (bn(x[part]) * w[part]).sum().backward()
        torch.save(
            {"x": x.grad[part], "weight": bn.weight.grad, "mean": bn.running_mean},
            os.path.join(out, f"bn{rank}.pt"),
        )
    finally:
        leave()


def test_group_batch_norm_is_batch_norm_of_the_concatenated_batch(tmp_path):
    mp.spawn(_group_bn, args=(2, free_port(), str(tmp_path)), nprocs=2)
    torch.manual_seed(0)
    x = (torch.randn(6, 5, 4, 4) * 3 + 2).requires_grad_(True)
    bn = torch.nn.BatchNorm2d(5)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    w = torch.randn(6, 5, 4, 4)
    (bn(x) * w).sum().backward()
    got = [torch.load(tmp_path / f"bn{r}.pt") for r in range(2)]
    torch.testing.assert_close(torch.cat([g["x"] for g in got]), x.grad, rtol=1e-4, atol=1e-5)
    # Each rank holds its share of the weight gradient (DDP would sum and halve them).
    torch.testing.assert_close(got[0]["weight"] + got[1]["weight"], bn.weight.grad)
    torch.testing.assert_close(got[0]["mean"], bn.running_mean)


def test_sync_batch_norms_keeps_the_state_dict():
    from sagan_core.models import Generator

    G = Generator(8, 10, 32, 2)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    sync_batch_norms(G)
    assert sum(isinstance(m, GroupBatchNorm2d) for m in G.modules()) == 7
    after = G.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


class Recorder(TrainerCallbacks):
    def __init__(self, kill_rank_at: int | None = None, run_dir=None):
        self.metrics, self.checkpoints = {}, []
        self.kill_rank_at, self.run_dir = kill_rank_at, run_dir

    def on_metrics(self, step, metrics):
        self.metrics.setdefault(step, {}).update(metrics)

    def on_checkpoint(self, step, path, tags):
        self.checkpoints.append((step, path))
        if step == self.kill_rank_at:
            pid = int((self.run_dir / "rank-1.pid").read_text())
            os.kill(pid, signal.SIGKILL)


def test_two_process_run_reports_once_and_resumes_exactly(tmp_path):
    cfg = config(batch_size=4, gpus=2, steps=4)
    whole = Recorder()
    result = train_distributed(cfg, tmp_path / "whole", whole)
    assert result.step == 4 and not result.stopped
    assert sorted(whole.metrics) == [1, 2, 3, 4]  # one series: rank 0's
    assert whole.metrics[4]["images_per_s"] > 0
    assert [s for s, _ in whole.checkpoints] == [2, 4]
    final = load_checkpoint(result.last_checkpoint)
    assert final["config"]["gpus"] == 2

    # The step-2 checkpoint, resumed on two processes, ends where the uninterrupted run did.
    half = Recorder()
    train_distributed(config(batch_size=4, gpus=2, steps=2), tmp_path / "half", half)
    resumed = Recorder()
    again = train_distributed(
        cfg, tmp_path / "resumed", resumed, resume_from=half.checkpoints[-1][1]
    )
    assert sorted(resumed.metrics) == [3, 4]
    for step in (3, 4):
        for name in ("d_loss", "g_loss"):
            assert resumed.metrics[step][name] == pytest.approx(whole.metrics[step][name], rel=1e-6)
    got = load_checkpoint(again.last_checkpoint)
    for net in ("G", "D", "G_ema"):
        for k, v in final[net].items():
            torch.testing.assert_close(got[net][k], v, rtol=1e-6, atol=1e-7)


def test_a_killed_rank_stops_the_run_with_rank_lost_error_after_a_checkpoint(tmp_path):
    cfg = config(batch_size=4, gpus=2, steps=50, checkpoint_every=2)
    recorder = Recorder(kill_rank_at=2, run_dir=tmp_path)
    with pytest.raises(RankLostError) as e:
        train_distributed(cfg, tmp_path, recorder)
    assert e.value.rank == 1 and "killed by signal 9" in str(e.value)
    assert [s for s, _ in recorder.checkpoints] == [2]  # the last good checkpoint is kept
    assert max(recorder.metrics) < 50


class StopAt(Recorder):
    def __init__(self, step: int):
        super().__init__()
        self.stop_at = step

    def should_stop(self, step):
        return step >= self.stop_at


def test_a_stop_asked_on_rank_0_stops_every_rank_at_that_step_with_a_checkpoint(tmp_path):
    cfg = config(batch_size=4, gpus=2, steps=50, checkpoint_every=0)
    stopper = StopAt(3)  # a cancel, a warm shutdown: rank 0's callbacks say so
    result = train_distributed(cfg, tmp_path, stopper)
    assert result.stopped and result.step == 3
    assert [s for s, _ in stopper.checkpoints] == [3]
    assert load_checkpoint(result.last_checkpoint)["step"] == 3
    assert not (tmp_path / "rank-1.error").exists()  # rank 1 stopped too, in order


def test_gpus_is_validated(tmp_path):
    assert TrainConfig().gpus == 1
    with pytest.raises(ConfigError) as e:
        TrainConfig(gpus=0).validate()
    assert e.value.field == "gpus"
    with pytest.raises(ConfigError) as e:
        TrainConfig(gpus=2, device="cuda:1").validate()
    assert e.value.field == "device" and "cuda:0..1" in str(e.value)
