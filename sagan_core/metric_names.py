"""The names of the metrics a job can write, torch-free: the API tells a typo (`d_los`) from a
metric that has no rows yet (`fid` before the first evaluation) with them.

tests/core/test_metric_names.py holds the trainer's and the scores' real names to these.
"""

from __future__ import annotations

import re

from .config import did_you_mean, shown

# Every log_every steps (Trainer.run): window means of the step's losses and D outputs
# (g_spread: the mode-seeking term's ratio, when diversity_weight is on), the attention gammas,
# throughput and the learning rates.
TRAINING = (
    "d_loss",
    "g_loss",
    "d_real",
    "d_fake",
    "d_real_sign",  # ADA's overfitting signal r_t: mean sign of D's real logits
    "augment_p",  # ADA's augmentation probability (when ada_target is on)
    "g_spread",
    "gamma_g",
    "gamma_d",
    "images_per_s",
    "tflops",
    "lr_g",
    "lr_d",
    "compile_s",  # the fast path's first log line: seconds its first step took (compiling)
    # CUDA runs only (sagan_core.gpu_stats): the window's memory peaks, NVML's utilisation, power
    "gpu_mem_gib",
    "gpu_mem_reserved_gib",
    "gpu_util",
    "gpu_power_w",
)
# Every variety_every steps (sagan_core.variety).
VARIETY = ("class_accuracy", "variety", "variety_min", "nearest_real")
# Every eval_every steps, and in evaluation jobs (sagan_core.evaluate.scores).
SCORES = ("is", "is_std", "fid", "kid", "kid_std")

# Per job kind: the names it can write, and the patterns of the names made per layer or class
# (`gamma_g/<layer>` when a network has several attention layers; `fid_class_<k>` per class an
# evaluation was asked for).
NAMES = {
    "train": (*TRAINING, *VARIETY, *SCORES),
    "evaluate": (*SCORES, "intra_fid"),
}
PATTERNS = {
    "train": {
        "gamma_g/<layer>": re.compile(r"gamma_g/.+"),
        "gamma_d/<layer>": re.compile(r"gamma_d/.+"),
    },
    "evaluate": {"fid_class_<k>": re.compile(r"fid_class_[0-9]+")},
}


def can_write(kind: str, name: str) -> bool:
    """Whether a job of `kind` (train, evaluate) may write a metric called `name`."""
    if name in NAMES.get(kind, ()):
        return True
    return any(p.fullmatch(name) for p in PATTERNS.get(kind, {}).values())


def listed(kind: str) -> list[str]:
    """The names a job of `kind` can write, patterns included, for a message."""
    return [*NAMES.get(kind, ()), *PATTERNS.get(kind, {})]


def unknown_metrics_message(unknown: list[str], kind: str, present: list[str]) -> str:
    """`names: unknown metric 'd_los'; did you mean 'd_loss'? ...` and the job's known names."""
    known = sorted({*present, *NAMES.get(kind, ())})
    parts = []
    for name in unknown[:5]:
        parts.append((shown(name), did_you_mean(name, known)))
    if len(parts) == 1:
        text = f"unknown metric {parts[0][0]}" + (f"; {parts[0][1]}" if parts[0][1] else "")
    else:
        text = "unknown metrics " + ", ".join(f"{n} ({h})" if h else n for n, h in parts)
        text += f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    known_here = ", ".join(sorted({*present, *listed(kind)}))
    has = f"rows so far: {', '.join(present)}" if present else "no rows yet"
    joiner = " " if text.endswith("?") else ". "
    return f"names: {text}{joiner}Known for this {kind} job: {known_here}; {has}"
