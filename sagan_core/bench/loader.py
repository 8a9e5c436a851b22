"""Loader benchmark: can a packed memmap feed training? Batches/s of the sampler against steps/s.

    python -m sagan_core.bench loader --resolution 128 --images 8192
    python -m sagan_core.bench loader --resolution 128 --measure-train        # also time the paper
    python -m sagan_core.bench loader --resolution 128 --train-images-per-s 900  # a known GPU rate

Writes a packed file of random images (the format stored datasets use), opens it as the trainer
does (`packed`: a read-only memmap), and times `BatchSampler.next()` (random indices, a host
gather from the memmap, the copy to the device, uint8 -> float in [-1, 1]) at the paper's batch
size. The goal: the loader never limits training, i.e. its images/s is at least 20x the training
images/s of the paper preset on the same machine (`--measure-train`, a few steps) or a known rate.
The file is read through the page cache: a warm run measures the gather, not the disk.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig
from ..data import BatchSampler, build_dataset
from ..device import resolve_device
from ..packed import PackedWriter
from ..trainer import Trainer

GOAL = 20.0


def write_random_packed(path: Path, count: int, resolution: int, classes: int = 10) -> Path:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, count).tolist()
    with PackedWriter(path, resolution, [str(i) for i in range(classes)], labels) as writer:
        for start in range(0, count, 256):
            n = min(256, count - start)
            writer.write(rng.integers(0, 256, (n, 3, resolution, resolution), np.uint8).tobytes())
        writer.close()
    return path


def sampler_rate(path: Path, resolution: int, batch: int, device: torch.device, seconds: float):  # noqa: ANN201
    ds = build_dataset(TrainConfig(dataset="packed", data_root=str(path), resolution=resolution))
    sampler = BatchSampler(ds, batch, device, torch.Generator().manual_seed(0))
    sampler.next()  # warm: page cache, allocator
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x, _ = sampler.next()
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
        _ = x.sum().item()
    return n * batch / (time.perf_counter() - start)


def gather_rate(path: Path, resolution: int, batch: int, seconds: float) -> float:
    """The host's part alone (random indices, gather from the memmap into one array): what a GPU
    step waits for; the uint8 -> float conversion runs on the GPU there."""
    ds = build_dataset(TrainConfig(dataset="packed", data_root=str(path), resolution=resolution))
    rng = np.random.default_rng(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        np.ascontiguousarray(ds.images[rng.integers(0, len(ds), batch)])
        n += 1
    return n * batch / (time.perf_counter() - start)


def train_rate(resolution: int, batch: int, device: torch.device, steps: int) -> float:
    cfg = TrainConfig(
        dataset="synthetic", resolution=resolution, preset="paper", batch_size=batch,
        steps=10**6, checkpoint_every=0, sample_every=0, variety_every=0, device=str(device),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(cfg, Path(run))
        trainer.train_step()  # warm
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m sagan_core.bench loader", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--images", type=int, default=4096, help="images in the packed file")
    p.add_argument("--batch-size", type=int, default=64, help="the paper's is 64")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--measure-train", action="store_true", help="time paper-preset steps here")
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--train-batch-size", type=int, default=None, help="default: --batch-size")
    p.add_argument("--train-images-per-s", type=float, default=None, help="a known rate")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_random_packed(Path(tmp) / "bench.pack", args.images, args.resolution)
        size_mb = path.stat().st_size / 1e6
        loader = sampler_rate(path, args.resolution, args.batch_size, device, args.seconds)
        gather = gather_rate(path, args.resolution, args.batch_size, args.seconds)
    out = {"device": str(device), "resolution": args.resolution, "batch_size": args.batch_size,
           "packed_mb": round(size_mb, 1), "loader_images_per_s": round(loader, 1),
           "host_gather_images_per_s": round(gather, 1)}  # fmt: skip
    what = f"{args.images} images at {args.resolution} px, batch {args.batch_size}, {device}"
    print(f"loader: {loader:,.0f} images/s from a {size_mb:.0f} MB packed memmap ({what})")
    print(f"host gather alone (what a GPU step waits for): {gather:,.0f} images/s")
    train = args.train_images_per_s
    if train is None and args.measure_train:
        batch = args.train_batch_size or args.batch_size
        train = train_rate(args.resolution, batch, device, args.train_steps)
        print(f"training (paper preset, {device}): {train:,.1f} images/s")
    if train:
        ratio = loader / train
        verdict = "ok" if ratio >= GOAL else "the loader would limit training"
        print(f"loader / training = {ratio:,.1f}x (goal >= {GOAL:.0f}x): {verdict}")
        out.update(train_images_per_s=round(train, 2), ratio=round(ratio, 1))
    return out


if __name__ == "__main__":
    main()
