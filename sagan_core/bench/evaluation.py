"""Evaluation-speed benchmark: IS + FID of a generator's samples against cached reference stats.

    python -m sagan_core.bench eval --inception-weights weights-inception-2015-12-05-6726825d.pth \\
        --samples 50000 --resolution 128 --num-classes 1000

The reference statistics are computed once (and cached in a temporary directory) before the
clock starts, as they are in the service; the timed part is what a user waits for: generation,
Inception at 299px, the statistics and the metrics. The goal on one H100: 50,000 samples in 30 s.

The reference path is torch-fidelity's own `calculate_metrics` on the same generator, weights and
reference images (its reference cache warmed the same way), timed in the same run for the ratio.
Its conditional sampler calls `np.int` (gone in NumPy >= 1.24), so the wrapper below presents the
generator as unconditional and draws classes itself, as ours does.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch_fidelity.generative_model_base import GenerativeModelBase

from ..config import EVAL_SAMPLES, TrainConfig
from ..device import resolve_device
from ..evaluate import DirectoryStatsCache, FeatureExtractor, evaluate_generator
from ..models import Generator
from ..sample import to_uint8


class _FidelityGenerator(GenerativeModelBase):
    """G as torch-fidelity's GenerativeModelBase: z in, uint8 images out, classes drawn inside."""

    def __init__(self, G: torch.nn.Module, num_classes: int):
        super().__init__()
        self.G, self._classes = G, num_classes
        self._gen = torch.Generator().manual_seed(0)

    @property
    def z_size(self) -> int:
        return self.G.z_dim

    @property
    def z_type(self) -> str:
        return "normal"

    @property
    def num_classes(self) -> int:
        return 0  # we draw the classes: torch-fidelity's own draw uses np.int

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        y = torch.randint(0, self._classes, (z.shape[0],), generator=self._gen).to(z.device)
        return to_uint8(self.G(z, y))


class _Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _time_torch_fidelity(G, reference, args, weights, device, cache_root) -> float:  # noqa: ANN001
    import torch_fidelity

    common = dict(
        input1=_FidelityGenerator(G, args.num_classes),
        input2=_Images(reference),
        input2_cache_name=f"bench-r{args.resolution}-n{len(reference)}",
        cache_root=cache_root,
        cache=True,
        feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(weights),
        batch_size=args.batch_size,
        cuda=device.type == "cuda",
        verbose=False,
    )
    torch_fidelity.calculate_metrics(
        input1_model_num_samples=min(100, args.samples), fid=True, **common
    )  # warm: reference statistics into its cache
    t0 = time.perf_counter()
    torch_fidelity.calculate_metrics(
        input1_model_num_samples=args.samples, isc=True, fid=True, **common
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sagan_core.bench eval", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--inception-weights", help="default: $SAGAN_INCEPTION_WEIGHTS, hub cache, download"
    )
    p.add_argument("--samples", type=int, default=EVAL_SAMPLES)
    p.add_argument(
        "--reference", type=int, default=10_000, help="real (synthetic) reference images"
    )
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--no-reference", action="store_true", help="skip torch-fidelity's own pipeline (the ratio)"
    )
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    cfg = TrainConfig(
        dataset="synthetic",
        resolution=args.resolution,
        num_classes=args.num_classes,
        preset=args.preset,
    ).resolved()
    torch.manual_seed(0)
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
        ref_seconds = (
            None
            if args.no_reference
            else _time_torch_fidelity(G, reference, args, extractor.weights_path, device, tmp)
        )
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
    print("| path | samples | seconds | images/s | speed vs torch-fidelity | IS | FID |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ratio = f"x{ref_seconds / seconds:.2f}" if ref_seconds else "n/a"
    print(
        f"| sagan_core | {args.samples:,} | {seconds:.1f} | {args.samples / seconds:,.0f} "
        f"| {ratio} | {result['is']:.2f} | {result['fid']:.1f} |"
    )
    if ref_seconds:
        print(
            f"| torch-fidelity | {args.samples:,} | {ref_seconds:.1f} "
            f"| {args.samples / ref_seconds:,.0f} | x1.00 | | |"
        )
    print(f"(reference statistics and warm-up before the clock: {warm:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
