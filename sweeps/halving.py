"""Synchronous successive halving (Jamieson and Talwalkar, 2016): every trial runs to the first
rung and waits there; once all have arrived, the best 1/reduction go on to the next rung and the
rest are pruned; the last survivors run to the end. Torch-free and storage-free: the sweep's
driver decides the rungs with these rules, a trial's worker pauses with them.

Optuna's own SuccessiveHalvingPruner is asynchronous (ASHA): it judges a trial against those that
reached the rung before it, so the first trials of a sweep always go on, and with a few trials
run a few at a time most of the budget is spent before anyone is stopped (issue #23's bench:
55-77% of the steps). A trial of this service can wait at a rung without holding a worker (its
job is `paused` at a checkpoint and resumed from it), so the sweep can afford to wait.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

PROMOTED = "halving_promoted"  # a trial's system attr: the highest rung it may run past
MODES = ("sync", "async")


def rung_index(step: int, min_steps: int, reduction: int) -> int | None:
    """k when `step` is rung k (min_steps x reduction^k), else None."""
    rung, k = min_steps, 0
    while rung < step:
        rung, k = rung * reduction, k + 1
    return k if rung == step else None


def rung_step(k: int, min_steps: int, reduction: int) -> int:
    return min_steps * reduction**k


def keep_count(arrived: int, reduction: int) -> int:
    """How many of the trials at a rung go on: the best 1/reduction, at least one."""
    return max(arrived // reduction, 1)


def ranked(values: Mapping[int, float], direction: str) -> list[int]:
    """Trial numbers best first; a value that is not a number is last, ties by number."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(number: int) -> tuple[bool, float, int]:
        value = values[number]
        bad = value is None or not math.isfinite(value)
        return (bad, 0.0 if bad else sign * value, number)

    return sorted(values, key=key)


def winners(values: Mapping[int, float], reduction: int, direction: str) -> list[int]:
    """The trials that go on from a rung where every trial has arrived with `values`."""
    return ranked(values, direction)[: keep_count(len(values), reduction)]


def pruned_reason(
    metric: str,
    step: int,
    value: float,
    peers: list[float],
    reduction: int,
    direction: str,
    rung_step_: int | None = None,
) -> str:
    """The one line a pruned trial ends with: its value, the cut, the median of its rung."""
    at = rung_step_ if rung_step_ is not None else step
    finite = [v for v in peers if v is not None and math.isfinite(v)]
    if not finite or value is None or not math.isfinite(value):
        return f"pruned at step {step}: {metric} is {value}"
    keep = keep_count(len(peers), reduction)
    ordered = sorted(finite, reverse=direction == "maximize")
    cut = ordered[min(keep, len(ordered)) - 1]
    return (
        f"pruned at step {step}: {metric} {value:.4g}, not in the best {keep} of the "
        f"{len(peers)} trials at step {at} (successive halving, 1/{reduction} go on; the cut "
        f"was {cut:.4g}, the median {statistics.median(finite):.4g})"
    )


def paused_reason(metric: str, step: int, value: float, reduction: int) -> str:
    shown = f"{value:.4g}" if value is not None and math.isfinite(value) else str(value)
    return (
        f"paused at step {step} ({metric} {shown}): waits for every trial of the sweep to reach "
        f"step {step}, then the best 1/{reduction} go on from this checkpoint (successive halving)"
    )
