"""Evaluation-speed benchmark: IS + FID of a generator's samples against cached reference stats.

    python -m sagan_core.bench_eval --inception-weights weights-inception-2015-12-05-6726825d.pth \\
        --samples 50000 --resolution 128 --num-classes 1000

The reference statistics are computed once (and cached in a temporary directory) before the
clock starts, as they are in the service; the timed part is what a user waits for: generation,
Inception at 299px, the statistics and the metrics. The goal on one H100: 50,000 samples in 30 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from .config import TrainConfig
from .evaluate import DirectoryStatsCache, FeatureExtractor, evaluate_generator
from .models import Generator
from .trainer import resolve_device


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sagan_core.bench_eval", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--inception-weights", help="default: $SAGAN_INCEPTION_WEIGHTS, hub cache, download"
    )
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument(
        "--reference", type=int, default=10_000, help="real (synthetic) reference images"
    )
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    cfg = TrainConfig(
        dataset="synthetic",
        resolution=args.resolution,
        num_classes=args.num_classes,
        preset=args.preset,
    ).resolved()
    G = Generator(cfg.z_dim, args.num_classes, args.resolution, cfg.g_ch).to(device).eval()
    g = torch.Generator().manual_seed(0)
    reference = torch.randint(
        0,
        256,
        (args.reference, 3, args.resolution, args.resolution),
        generator=g,
        dtype=torch.uint8,
    )
    extractor = FeatureExtractor(args.inception_weights, device)
    with tempfile.TemporaryDirectory() as tmp:
        cache = DirectoryStatsCache(tmp)
        key = f"bench-r{args.resolution}"
        t0 = time.perf_counter()
        evaluate_generator(
            G,
            reference,
            key,
            100,
            metrics=("fid",),
            extractor=extractor,
            batch_size=args.batch_size,
            cache=cache,
        )
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = evaluate_generator(
            G,
            reference,
            key,
            args.samples,
            metrics=("is", "fid"),
            extractor=extractor,
            batch_size=args.batch_size,
            cache=cache,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    assert result.reference_cache_hit, "the timed run must use the cached reference statistics"
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"# IS + FID benchmark: {args.samples:,} samples at {args.resolution}px, {name}, "
        f"torch {torch.__version__}"
    )
    print("| samples | seconds | images/s | reference stats + warm-up (s) | IS | FID |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.samples:,} | {seconds:.1f} | {args.samples / seconds:,.0f} | {warm:.1f} "
        f"| {result['is']:.2f} | {result['fid']:.1f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
