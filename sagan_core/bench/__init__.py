"""The benchmarks, one package: `python -m sagan_core.bench train|ddp|eval|loader|quality ...`.

- `train` (the default: `python -m sagan_core.bench --sizes 32x64`, `sagan bench`, `make bench`):
  every training path against plain in one run (images/s, TFLOP/s, memory, the first step HOLDS).
- `ddp`: one process against DDP on 1..N devices (overhead, scaling).
- `eval`: IS + FID over many samples, ours beside torch-fidelity's pipeline.
- `loader`: the sampler's images/s from a packed memmap, against a training rate.
- `quality`: train a config on a small data set, then class accuracy, variety and wall time.
"""

from __future__ import annotations

COMMANDS = ("train", "ddp", "eval", "loader", "quality")


def main(argv: list[str] | None = None, prog: str = "python -m sagan_core.bench") -> int:
    """Run the benchmark the first argument names (train when it names none)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in COMMANDS else "train"
    from . import ddp, evaluation, loader, quality, train

    if command == "train":
        return train.main(args, prog=f"{prog} train")
    if command == "ddp":
        return ddp.main(args, prog=f"{prog} ddp")
    if command == "eval":
        return evaluation.main(args)
    if command == "loader":
        loader.main(args)
        return 0
    return quality.main(args)
