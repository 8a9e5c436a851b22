"""Data-parallel benchmark (issues #15, #25): one process against DDP on 1, 2, 4, 8 devices.

    python -m sagan_core.bench ddp                          # CUDA: 32x64 and 128x256, every GPU
    python -m sagan_core.bench ddp --sizes 32x8 --gpus 1,2 --device cpu --path plain --steps 6

For each size it trains `synthetic` data from one seed: first the one-process path (what a job of
gpus=1 runs), then the DDP path (sagan_core.distributed: DDP, the control group's stop flag, the
averaged losses, synchronised batch norm) on 1, 2, ... processes of the same per-process batch,
started by torch's elastic agent as a job's are (sagan_core.elastic: rank 0 asks the caller's
callbacks through sagan_core.rank_channel). The first half of the steps warms up (and compiles);
images/s is the second half's. Prints, per row, images/s, the DDP overhead on one device against
the one-process path (goal <= 5%), the scaling efficiency images/s(N) / (N * images/s(DDP on 1))
(goal >= 90% at 8) and the wall time (the launch's start-up: the agent, spawning, rendezvous);
then the cost per step of asking the caller "stop?" from rank 0 (one channel round trip).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..config import TrainConfig
from ..launch import train_distributed
from ..rank_channel import Channel, ChannelServer, RemoteCallbacks
from ..trainer import Trainer, TrainerCallbacks
from .sizes import parse_sizes

SIZES = ((32, 64, 10), (128, 256, 1000))


class _Speed(TrainerCallbacks):
    """The images/s of the last log line (the second half of the run)."""

    def __init__(self):
        self.images_per_s = 0.0

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if "images_per_s" in metrics:
            self.images_per_s = metrics["images_per_s"]


def _config(args, resolution: int, batch: int, classes: int, gpus: int) -> TrainConfig:  # noqa: ANN001
    return TrainConfig(
        dataset="synthetic", resolution=resolution, num_classes=classes, preset="paper",
        batch_size=batch, steps=2 * args.steps, log_every=args.steps, checkpoint_every=0,
        sample_every=0, variety_every=0, device=args.device, path=args.path, gpus=gpus,
        seed=0, sync_bn=not args.no_sync_bn,
    )  # fmt: skip


def main(argv: list[str] | None = None, prog: str = "python -m sagan_core.bench ddp") -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", help="RxB[xC],...: resolution, per-process batch, classes")
    p.add_argument("--gpus", help="process counts (default: 1, 2, 4, 8 up to the devices)")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--path", choices=("plain", "fast"), default=None, help="default: the device's")
    p.add_argument("--steps", type=int, default=20, help="measured steps (as many warm up first)")
    p.add_argument("--no-sync-bn", action="store_true", help="each process normalises its own")
    args = p.parse_args(argv)
    devices = torch.cuda.device_count() if args.device.startswith("cuda") else 2
    counts = (
        [int(n) for n in args.gpus.split(",")]
        if args.gpus
        else [n for n in (1, 2, 4, 8) if n <= devices]
    )
    sizes = parse_sizes(args.sizes) if args.sizes else list(SIZES if cuda else [(32, 8, 10)])
    print(f"device {args.device} ({devices} available), path {args.path or 'default'}")
    header = (
        f"{'size':>14} {'run':>10} {'images/s':>10} {'vs 1 proc':>10} {'scaling':>8} {'wall':>7}"
    )
    for resolution, batch, classes in sizes:
        print(header)
        size = f"{resolution}px b{batch} c{classes}"
        with tempfile.TemporaryDirectory() as tmp:
            speed = _Speed()
            started = time.perf_counter()
            cfg = _config(args, resolution, batch, classes, 1)
            Trainer(cfg, Path(tmp) / "one", speed).run()
            one, wall = speed.images_per_s, time.perf_counter() - started
            print(f"{size:>14} {'1 process':>10} {one:>10.1f} {'':>10} {'':>8} {wall:>6.1f}s")
            ddp_one = None
            for n in counts:
                speed = _Speed()
                started = time.perf_counter()
                cfg = _config(args, resolution, batch, classes, n)
                train_distributed(cfg, Path(tmp) / f"ddp{n}", speed)
                ips = speed.images_per_s
                ddp_one = ips if n == 1 else ddp_one
                vs = f"{ips / one - 1:+.1%}" if n == 1 else ""
                scaling = f"{ips / (n * ddp_one):.0%}" if ddp_one else ""
                wall = time.perf_counter() - started
                print(
                    f"{size:>14} {f'DDP x{n}':>10} {ips:>10.1f} {vs:>10} {scaling:>8} {wall:>6.1f}s"
                )
    trips, seconds = channel_round_trip()
    print(f"rank 0 asks the caller 'stop?': {seconds / trips * 1e6:.0f} us a step ({trips} asked)")
    return 0


def _ask(channel, trips: int, out) -> None:  # noqa: ANN001  (a spawned process: rank 0's side)
    callbacks = RemoteCallbacks(channel)
    callbacks.should_stop(0)  # (the first trip starts the queues' threads)
    started = time.perf_counter()
    for step in range(trips):
        callbacks.should_stop(step)
    out.put(time.perf_counter() - started)


def channel_round_trip(trips: int = 2000) -> tuple[int, float]:
    """Seconds of `trips` should_stop round trips from a spawned process to this one's callbacks
    (the per-step cost rank 0 pays to ask the caller whether to stop)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    channel, out = Channel(), ctx.Queue()
    with ChannelServer(channel, TrainerCallbacks(), None, "cpu"):
        process = ctx.Process(target=_ask, args=(channel, trips, out))
        process.start()
        seconds = out.get(timeout=600)
        process.join()
    return trips, seconds


if __name__ == "__main__":
    sys.exit(main())
