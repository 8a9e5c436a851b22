"""The benchmarks, one package: `python -m sagan_core.bench train|ddp|eval|loader|quality ...`.

- `train` (the default: `python -m sagan_core.bench --sizes 32x64`, `sagan bench`, `make bench`):
  every training path against plain in one run (images/s, TFLOP/s, memory, the first step HOLDS).
- `ddp`: one process against DDP on 1..N devices (overhead, scaling).
- `eval`: IS + FID over many samples, ours beside torch-fidelity's pipeline.
- `loader`: the sampler's images/s from a packed memmap, against a training rate.
- `quality`: train a config on a small data set, then class accuracy, variety and wall time.
"""

from __future__ import annotations

import importlib
import sys

MODULES = {
    "train": "train",
    "ddp": "ddp",
    "eval": "evaluation",
    "loader": "loader",
    "quality": "quality",
}
COMMANDS = tuple(MODULES)


def main(argv: list[str] | None = None, prog: str = "python -m sagan_core.bench") -> int:
    """Run the benchmark the first argument names (train when it names none)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args and args[0] in COMMANDS else "train"
    # Here, not at the top: each bench brings heavy imports of its own (torch-fidelity, the
    # evaluator, the variety judge), and `sagan bench` pays only for the one it runs.
    module = importlib.import_module(f".{MODULES[command]}", __name__)
    if command in ("train", "ddp"):
        return module.main(args, prog=f"{prog} {command}")
    result = module.main(args)
    return result if isinstance(result, int) else 0  # loader returns its figures
