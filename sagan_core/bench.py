"""Training-speed benchmark: the fast path against the plain reference path, in one run.

    python -m sagan_core.bench --resolution 32 --batch-size 64 --preset paper
    python -m sagan_core.bench --resolution 128 --batch-size 256 --num-classes 1000 --preset paper

Each path trains on `synthetic` data from the same seed, so both start from identical weights and
batches. Prints images/s, iterations/s, peak device memory, work per image-iteration
(FlopCounterMode), achieved TFLOP/s, the speed ratio against `plain`, and the first step's losses
and gradients of each path against the plain one (relative error): speed never buys a wrong step.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import TrainConfig
from .trainer import Trainer

# name -> config overrides; `plain` is the reference: eager, fp32, unfused.
PATHS = {
    "plain": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
}


@dataclass
class PathResult:
    name: str
    images_per_s: float
    iters_per_s: float
    peak_mem_gib: float | None
    gflop_per_image_iter: float
    tflops: float
    losses: dict[str, float]
    grads: dict[str, torch.Tensor]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(args: argparse.Namespace, overrides: dict) -> Trainer:
    cfg = TrainConfig(
        dataset="synthetic",
        num_classes=args.num_classes,
        resolution=args.resolution,
        batch_size=args.batch_size,
        preset=args.preset,
        steps=10**9,
        seed=0,
        device=args.device,
        **overrides,
    )
    trainer = Trainer(cfg, run_dir=".bench-unused")
    trainer.G.train()
    trainer.D.train()
    return trainer


def _first_step(trainer: Trainer) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    stats = trainer.train_step()
    grads = {
        f"{net}.{name}": p.grad.detach().float().cpu().clone()
        for net, model in (("G", trainer.G), ("D", trainer.D))
        for name, p in model.named_parameters()
        if p.grad is not None
    }
    return {k: float(v) for k, v in stats.items()}, grads


def run_path(name: str, args: argparse.Namespace) -> PathResult:
    trainer = _trainer(args, PATHS[name])
    device = trainer.device
    losses, grads = _first_step(trainer)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step()
    flops = counter.get_total_flops()
    for _ in range(args.warmup):
        trainer.train_step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.iters):
        trainer.train_step()
    _sync(device)
    seconds = time.perf_counter() - t0
    iters_per_s = args.iters / seconds
    images_per_iter = args.batch_size  # one D step (real+fake batch) + one G step per iteration
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return PathResult(
        name=name,
        images_per_s=iters_per_s * images_per_iter,
        iters_per_s=iters_per_s,
        peak_mem_gib=peak,
        gflop_per_image_iter=flops / images_per_iter / 1e9,
        tflops=flops * iters_per_s / 1e12,
        losses=losses,
        grads=grads,
    )


def grad_error(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], net: str) -> float:
    """Relative error of one network's whole gradient (all its parameters as one vector)."""
    keys = [k for k in ref if k.startswith(net + ".") and k in grads]
    if not keys:
        return float("nan")
    a = torch.cat([grads[k].flatten() for k in keys])
    b = torch.cat([ref[k].flatten() for k in keys])
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sagan_core.bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    p.add_argument("--device", default="auto")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {', '.join(PATHS)}")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.paths.split(",") if n.strip()]
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        p.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    if "plain" not in names:
        names.insert(0, "plain")  # the reference is always measured in the same run

    results = [run_path(name, args) for name in names]
    ref = results[0]
    dev = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available() and args.device != "cpu"
        else (f"CPU ({torch.get_num_threads()} threads)")
    )
    print(
        f"# SAGAN training benchmark: {args.resolution}px, batch {args.batch_size}, "
        f"{args.num_classes} classes, preset {args.preset}, {dev}, torch {torch.__version__}"
    )
    print(
        "| path | images/s | iterations/s | peak memory | GFLOP per image-iteration | TFLOP/s "
        "| vs plain | d_loss rel. err | G grad rel. err | D grad rel. err |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        mem = f"{r.peak_mem_gib:.1f} GiB" if r.peak_mem_gib is not None else "n/a"
        d_err = abs(r.losses["d_loss"] - ref.losses["d_loss"]) / max(
            abs(ref.losses["d_loss"]), 1e-12
        )
        speed = r.images_per_s / ref.images_per_s
        g_err, dd_err = grad_error(r.grads, ref.grads, "G"), grad_error(r.grads, ref.grads, "D")
        print(
            f"| {r.name} | {r.images_per_s:,.0f} | {r.iters_per_s:.2f} | {mem} "
            f"| {r.gflop_per_image_iter:.2f} | {r.tflops:.2f} | x{speed:.2f} "
            f"| {d_err:.2e} | {g_err:.2e} | {dd_err:.2e} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
