"""Training-speed benchmark: the fast path against the plain reference path, in one run.

    python -m sagan_core.bench train             # CUDA: 32x64, 32x256, 128x256 (1,000 classes)
    python -m sagan_core.bench train --sizes 32x64 --steps 3    # (the CPU's default size)
    python -m sagan_core.bench train --resolution 128 --batch-size 256 --num-classes 1000
    sagan bench ...                                   # the same, from the one CLI

Each path trains on `synthetic` data from the same seed, so all start from identical weights and
batches. Prints images/s, iterations/s, peak device memory, work per image-iteration
(FlopCounterMode), achieved TFLOP/s, compile time (the first step of a compiled path), the speed
ratio against `plain`, and the first step's losses and gradients of each path against the plain
one (relative error) with HOLDS or FAILS against the path's tolerance: speed never buys a wrong
step.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import TrainConfig
from ..flops import step_flops
from ..trainer import Trainer
from .sizes import parse_sizes

# name -> config overrides; `plain` is the reference: eager, fp32, unfused.
PATHS = {
    "plain": {"precision": "fp32", "path": "plain"},
    "bf16": {"precision": "bf16", "path": "plain"},
    "fast": {"precision": "fp32", "path": "fast"},  # bf16 on CUDA whatever precision says
    # fast with CUDA graphs (reduce-overhead); on a CPU it would be fast again, so not by default
    "graphs": {"precision": "fp32", "path": "fast", "cuda_graphs": True},
}
CUDA_ONLY = ("graphs",)
# The sizes (resolution, batch, classes): CUDA's default; the CPU's is the first.
SIZES = ((32, 64, 10), (32, 256, 10), (128, 256, 1000))
# Largest relative error of a loss or a network's gradient for the one-step check to hold.
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2}


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
    compile_s: float | None = None
    bf16: bool = False


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
    fast = trainer.path == "fast"
    torch.manual_seed(1)  # the same latents for every path's first step
    started = time.perf_counter()
    losses, grads = _first_step(trainer)  # a compiled path compiles here
    _sync(device)
    compile_s = time.perf_counter() - started if fast else None
    if fast:  # a dispatch mode around compiled code counts nothing: count on meta copies
        flops = step_flops(trainer.config)
    else:
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
        compile_s=compile_s,
        bf16=trainer.config.precision == "bf16" or (fast and device.type == "cuda"),
    )


def grad_error(grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], net: str) -> float:
    """Relative error of one network's whole gradient (all its parameters as one vector)."""
    keys = [k for k in ref if k.startswith(net + ".") and k in grads]
    if not keys:
        return float("nan")
    a = torch.cat([grads[k].flatten() for k in keys])
    b = torch.cat([ref[k].flatten() for k in keys])
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def main(argv: list[str] | None = None, prog: str = "python -m sagan_core.bench train") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    listed = ", ".join("x".join(map(str, size)) for size in SIZES)
    p.add_argument("--sizes", help=f"RxB[xC],... (default: CUDA {listed}; CPU the first)")
    p.add_argument("--resolution", type=int, default=None, help="one size (with --batch-size)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    p.add_argument("--device", default="auto")
    p.add_argument("--iters", "--steps", dest="iters", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--paths",
        help=f"comma list of {', '.join(PATHS)} (default: all on CUDA; on a CPU all but "
        f"{', '.join(CUDA_ONLY)})",
    )
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and args.device not in ("cpu", "mps")
    default = [n for n in PATHS if cuda or n not in CUDA_ONLY]
    names = [n.strip() for n in (args.paths or ",".join(default)).split(",") if n.strip()]
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        p.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    if "plain" not in names:
        names.insert(0, "plain")  # the reference is always measured in the same run
    if args.sizes:
        try:
            sizes = parse_sizes(args.sizes)
        except ValueError as e:
            p.error(str(e))
    elif args.resolution or args.batch_size or args.num_classes:
        r = args.resolution or 32
        sizes = [(r, args.batch_size or 64, args.num_classes or (1000 if r >= 128 else 10))]
    else:
        sizes = list(SIZES if cuda else SIZES[:1])
    for resolution, batch, classes in sizes:
        args.resolution, args.batch_size, args.num_classes = resolution, batch, classes
        results = []
        for name in names:
            results.append(run_path(name, args))
            r = results[-1]
            print(f"# {resolution}x{batch}: {name} {r.images_per_s:.1f} images/s", file=sys.stderr)
        report(args, results)
    return 0


def report(args: argparse.Namespace, results: list[PathResult]) -> None:
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
        "| vs plain | d_loss rel. err | G grad rel. err | D grad rel. err | compile "
        "| one step vs plain |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        mem = f"{r.peak_mem_gib:.1f} GiB" if r.peak_mem_gib is not None else "n/a"
        d_err = abs(r.losses["d_loss"] - ref.losses["d_loss"]) / max(
            abs(ref.losses["d_loss"]), 1e-12
        )
        speed = r.images_per_s / ref.images_per_s
        g_err, dd_err = grad_error(r.grads, ref.grads, "G"), grad_error(r.grads, ref.grads, "D")
        gl_err = abs(r.losses["g_loss"] - ref.losses["g_loss"]) / max(
            abs(ref.losses["g_loss"]), 1e-12
        )
        tol = TOLERANCE["bf16" if r.bf16 else "fp32"]
        holds = all(e < tol for e in (d_err, gl_err, g_err, dd_err))  # NaN fails
        compiled = f"{r.compile_s:.0f} s" if r.compile_s is not None else "-"
        print(
            f"| {r.name} | {r.images_per_s:,.1f} | {r.iters_per_s:.2f} | {mem} "
            f"| {r.gflop_per_image_iter:.2f} | {r.tflops:.3f} | x{speed:.2f} "
            f"| {d_err:.2e} | {g_err:.2e} | {dd_err:.2e} | {compiled} "
            f"| {'HOLDS' if holds else 'FAILS'} (< {tol:g}) |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
