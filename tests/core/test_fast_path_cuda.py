"""The fast path on a GPU (issue #14): bf16, channels_last, compile, fused Adam, CUDA graphs.

These need CUDA and are skipped without it (the CPU's fast path is held by test_fast_path.py).
`scripts/gpu_check.sh` runs them on a lent device beside the speed benchmarks.
"""

import pytest
import torch

from sagan_core.config import TrainConfig
from sagan_core.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

BF16 = 5e-2  # bench.TOLERANCE["bf16"]: a bf16 step against the fp32 plain step


def config(path: str, **overrides) -> TrainConfig:
    fields = dict(
        dataset="synthetic", num_classes=10, resolution=32, batch_size=64, preset="paper",
        steps=4, log_every=2, checkpoint_every=0, sample_every=0, variety_every=0,
        device="cuda", seed=0, path=path,
    )  # fmt: skip
    fields.update(overrides)
    return TrainConfig(**fields)


def first_step(trainer: Trainer) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    stats = {k: float(v) for k, v in trainer.train_step().items()}
    grads = {
        net: torch.cat([p.grad.float().flatten() for p in getattr(trainer, net).parameters()])
        for net in ("G", "D")
    }
    return stats, grads


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_the_fast_step_on_cuda_is_the_plain_step_within_bf16_tolerance(tmp_path, cuda_graphs):
    plain = Trainer(config("plain"), tmp_path / "plain")
    fast = Trainer(config("fast", cuda_graphs=cuda_graphs), tmp_path / "fast")
    assert (
        isinstance(fast.autocast, torch.autocast)
        and fast.channels_last
        and fast.cuda_graphs is cuda_graphs
    )
    assert fast.opt_g.defaults["fused"]
    ref_stats, ref_grads = first_step(plain)
    stats, grads = first_step(fast)
    for k in ("d_loss", "g_loss"):
        assert abs(stats[k] - ref_stats[k]) <= BF16 * abs(ref_stats[k]), k
    for net in ("G", "D"):
        assert rel(grads[net], ref_grads[net]) < BF16, net


def test_cuda_graphs_run_without_skips_or_recompiles_and_end_with_the_same_weights(tmp_path):
    from torch._dynamo.utils import counters

    counters.clear()
    ended = {}
    for graphs in (False, True):
        t = Trainer(config("fast", cuda_graphs=graphs), tmp_path / str(graphs))
        t.run()
        t.step = 0
        with torch._dynamo.config.patch(error_on_recompile=True):
            t.run()  # four more steps: replays, not recompiles
        ended[graphs] = float(t.D.linear.parametrizations.weight.original.float().norm())
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    # Same seed, same data: graphs change how kernels are launched, not what they compute.
    assert ended[True] == pytest.approx(ended[False], rel=1e-3)
