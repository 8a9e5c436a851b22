"""A sweep's request read and checked, torch-free and Optuna-free: the search space over
`TrainConfig` fields, the sampler, the trial budget, the objective, the pruning schedule and the
alias its winner gets. A bad field raises SpecError(field, message), a 422 naming it; nothing about
the service (quotas, workers, Inception weights) is decided here (api.sweep_configs does that).

    base:      {dataset: digits, steps: 2000}              # every trial's config
    space:     {lr_g: {log_uniform: [1e-4, 3e-3]},         # float: uniform | log_uniform
                d_steps: {int: [1, 3]},                     # int: int | int_log
                diff_augment: {choice: ["", "translation,cutout"]}}
    sampler:   tpe                                          # grid | random | tpe
    trials:    12                                           # grid: the grid's size when left out
    parallel:  2                                            # trials running at once
    objective: {metric: fid, direction: minimize}           # direction: from the metric if left out
    prune:     {every: 250, min_steps: 500, reduction: 3}   # successive halving; null: none
               # mode: sync (default: every trial waits at each rung) | async (Optuna's ASHA)
    promote:   best-digits                                  # the winner's alias; null: none
    seed:      0                                            # the sampler's
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing
from dataclasses import dataclass
from typing import Any

from sagan_core import metric_names
from sagan_core.config import MAX_INT, TrainConfig, did_you_mean, shown
from sweeps import halving

SAMPLERS = ("grid", "random", "tpe")
DIRECTIONS = ("minimize", "maximize")
KINDS = ("choice", "uniform", "log_uniform", "int", "int_log")
# A metric's better side, where it has one everyone agrees on.
DIRECTION_OF = {
    "fid": "minimize",
    "kid": "minimize",
    "is": "maximize",
    "class_accuracy": "maximize",
    "variety": "maximize",
    "variety_min": "maximize",
}
# Fields a trial may not vary: what data it reads, where it runs, and its budget (halving compares
# trials at equal steps; the budget is the sweep's `base.steps`).
FIXED_FIELDS = {
    "dataset": "every trial trains on the same data",
    "dataset_id": "every trial trains on the same data",
    "data_root": "every trial trains on the same data",
    "download": "every trial trains on the same data",
    "device": "the workers place the trials",
    "gpus": "the workers place the trials",
    "nodes": "the workers place the trials",
    "steps": "the trials' budget is the sweep's; set it in base",
}
MAX_CHOICES = 100
MAX_GRID = 10_000  # grid points enumerated; the trial limit caps what runs
TOP_KEYS = ("name", "base", "space", "sampler", "trials", "parallel", "objective", "prune",
            "promote", "seed")  # fmt: skip


class SpecError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class Param:
    """One field of the search space."""

    name: str
    kind: str  # choice | uniform | log_uniform | int | int_log
    values: tuple[Any, ...]  # the choices, or (low, high)

    def grid(self) -> tuple[Any, ...]:
        if self.kind != "choice":
            raise SpecError(f"space.{self.name}", "a grid takes choices only")
        return self.values

    def corners(self) -> tuple[Any, ...]:
        """The values a trial config is checked with before anything runs."""
        return self.values

    def to_dict(self) -> dict[str, list]:
        return {self.kind: list(self.values)}


@dataclass(frozen=True)
class Prune:
    every: int  # steps between the trials' objective evaluations
    min_steps: int  # the first rung: no trial stops before it
    reduction: int  # keep the best 1/reduction at each rung
    mode: str = "sync"  # sync: trials wait at each rung for all (sweeps.halving) | async: ASHA

    def rungs(self, steps: int) -> list[int]:
        out, rung = [], self.min_steps
        while rung < steps:
            out.append(rung)
            rung *= self.reduction
        return out


@dataclass
class SweepSpec:
    base: dict[str, Any]
    space: list[Param]
    sampler: str = "tpe"
    trials: int = 8
    parallel: int = 1
    metric: str = "variety"
    direction: str = "maximize"
    prune: Prune | None = None
    promote: str | None = None
    seed: int = 0
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": dict(self.base),
            "space": {p.name: p.to_dict() for p in self.space},
            "sampler": self.sampler,
            "trials": self.trials,
            "parallel": self.parallel,
            "objective": {"metric": self.metric, "direction": self.direction},
            "prune": dataclasses.asdict(self.prune) if self.prune else None,
            "promote": self.promote,
            "seed": self.seed,
        }

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the choices, the first field slowest, each in the order given."""
        names = [p.name for p in self.space]
        return [dict(zip(names, combo, strict=True)) for combo in _product(self.space)]

    def trial_config(self, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's config: the base, its parameters, and the cadence of its objective."""
        config = {**self.base, **params}
        cadence = self.prune.every if self.prune else None
        if self.metric in metric_names.SCORES:
            if not config.get("eval_every"):
                config["eval_every"] = cadence or config.get("steps") or 0
        elif self.metric in metric_names.VARIETY and cadence and not config.get("variety_every"):
            config["variety_every"] = cadence
        return config

    def checked_configs(self) -> list[dict[str, Any]]:
        """Trial configs that put every choice and both ends of every range through the core's
        validation before a trial runs: the base with one field changed at a time."""
        configs = [self.trial_config({})]
        for p in self.space:
            configs += [self.trial_config({p.name: v}) for v in p.corners()]
        return configs


def _product(space: list[Param]):  # noqa: ANN202
    return itertools.product(*(p.grid() for p in space))


def field_kinds() -> dict[str, str]:
    """Each TrainConfig field's kind of value: int, float, bool or text."""
    kinds = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        args = set(typing.get_args(hint)) - {type(None)} or {hint}
        base = next(iter(args))
        kinds[name] = {int: "int", float: "float", bool: "bool"}.get(base, "text")
    return kinds


def _int(raw: dict, key: str, default: int | None, low: int, high: int = MAX_INT) -> int | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(key, f"must be a whole number (got {shown(value)})")
    if not low <= value <= high:
        raise SpecError(key, f"must be between {low:,} and {high:,} (got {value:,})")
    return value


def _param(name: str, raw: Any, kind_of: str) -> Param:
    where = f"space.{name}"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise SpecError(
            where,
            f"one of {', '.join(KINDS)} with its values, e.g. {{choice: [0, 0.07]}} or "
            f"{{log_uniform: [1e-4, 3e-3]}} (got {shown(raw)})",
        )
    (kind, values), = raw.items()  # fmt: skip
    if kind not in KINDS:
        hint = did_you_mean(str(kind), KINDS)
        raise SpecError(where, f"unknown kind {shown(kind)}{'; ' + hint if hint else ''}; "
                        f"the kinds are {', '.join(KINDS)}")  # fmt: skip
    if not isinstance(values, list):
        raise SpecError(f"{where}.{kind}", f"must be a list (got {shown(values)})")
    if kind == "choice":
        if not values:
            raise SpecError(f"{where}.choice", "is empty: give at least one value")
        if len(values) > MAX_CHOICES:
            raise SpecError(f"{where}.choice", f"at most {MAX_CHOICES} values")
        bad = [v for v in values if not (v is None or isinstance(v, bool | int | float | str))]
        if bad:
            raise SpecError(f"{where}.choice", f"values are numbers, text, true/false or null "
                            f"(got {shown(bad[0])})")  # fmt: skip
        if len({repr(v) for v in values}) != len(values):
            raise SpecError(f"{where}.choice", "lists a value twice")
        return Param(name, kind, tuple(values))
    if kind_of not in ("int", "float"):
        raise SpecError(where, f"a range ({kind}) needs a number field, and {name} is "
                        f"{kind_of}: give {{choice: [...]}}")  # fmt: skip
    integer = kind in ("int", "int_log")
    if integer and kind_of != "int":
        raise SpecError(where, f"{name} takes decimals: use uniform or log_uniform")
    ok = len(values) == 2 and all(
        isinstance(v, int if integer else int | float) and not isinstance(v, bool)
        and math.isfinite(v) for v in values
    )  # fmt: skip
    if not ok:
        number = "whole numbers" if integer else "numbers"
        raise SpecError(f"{where}.{kind}", f"[low, high], two {number} (got {shown(values)})")
    low, high = values
    if not low < high:
        raise SpecError(f"{where}.{kind}", f"low must be below high (got {shown(values)})")
    if kind in ("log_uniform", "int_log") and low <= 0:
        raise SpecError(f"{where}.{kind}", f"a log range is above 0 (got low {shown(low)})")
    if kind_of == "float":
        low, high = float(low), float(high)
    return Param(name, kind, (low, high))


def parse(raw: Any, max_trials: int, default_metric: str = "variety") -> SweepSpec:
    """The checked spec of a request body (a dict, as YAML or JSON gives it)."""
    if not isinstance(raw, dict):
        raise SpecError("body", f"a mapping of {', '.join(TOP_KEYS)} (got {shown(raw)})")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        hint = did_you_mean(str(unknown[0]), TOP_KEYS)
        raise SpecError(str(unknown[0]), f"unknown sweep field{'; ' + hint if hint else ''}; "
                        f"the fields are {', '.join(TOP_KEYS)}")  # fmt: skip
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise SpecError("base", f"a config mapping, as POST /jobs takes (got {shown(base)})")
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise SpecError("space", "give at least one field to search, e.g. "
                        "{lr_g: {log_uniform: [1e-4, 3e-3]}}")  # fmt: skip
    kinds = field_kinds()
    space = []
    for name, spec in space_raw.items():
        if name not in kinds:
            hint = did_you_mean(str(name), kinds)
            raise SpecError(f"space.{name}", f"not a config field{'; ' + hint if hint else ''}")
        if name in FIXED_FIELDS:
            raise SpecError(f"space.{name}", f"cannot vary: {FIXED_FIELDS[name]}")
        if name in base:
            raise SpecError(f"space.{name}", "is also set in base; keep it in one place")
        space.append(_param(name, spec, kinds[name]))
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise SpecError("sampler", f"one of {', '.join(SAMPLERS)} (got {shown(sampler)})")
    grid_size = None
    if sampler == "grid":
        for p in space:
            if p.kind != "choice":
                raise SpecError(f"space.{p.name}", f"a grid takes choices only; {p.kind} needs "
                                "sampler random or tpe")  # fmt: skip
        grid_size = math.prod(len(p.values) for p in space)
        if grid_size > MAX_GRID:
            raise SpecError("space", f"the grid has {grid_size:,} points, more than {MAX_GRID:,}")
    default_trials = grid_size if grid_size is not None else 8
    trials = _int(raw, "trials", min(default_trials, max_trials), 1)
    if trials > max_trials:
        raise SpecError("trials", f"at most {max_trials} (SAGAN_MAX_SWEEP_TRIALS; got {trials})")
    if grid_size is not None and trials > grid_size:
        raise SpecError("trials", f"the grid has {grid_size} points; ask for at most that many")
    parallel = _int(raw, "parallel", 1, 1, trials)
    objective = raw.get("objective") or {}
    if isinstance(objective, str):
        objective = {"metric": objective}
    if not isinstance(objective, dict) or set(objective) - {"metric", "direction"}:
        raise SpecError("objective", f"{{metric: <name>, direction: minimize|maximize}} "
                        f"(got {shown(objective)})")  # fmt: skip
    metric = objective.get("metric", default_metric)
    train_names = metric_names.NAMES["train"]
    if not isinstance(metric, str) or not metric_names.can_write("train", metric):
        hint = did_you_mean(str(metric), train_names)
        raise SpecError("objective.metric", f"{shown(metric)} is not a metric trials log"
                        f"{'; ' + hint if hint else ''}; they log "
                        f"{', '.join(train_names)}")  # fmt: skip
    direction = objective.get("direction", DIRECTION_OF.get(metric))
    if direction is None:
        raise SpecError("objective.direction", f"say whether {metric} is better low or high: "
                        "minimize or maximize")  # fmt: skip
    if direction not in DIRECTIONS:
        raise SpecError("objective.direction", f"minimize or maximize (got {shown(direction)})")
    prune = None
    prune_raw = raw.get("prune")
    if prune_raw is not None:
        if not isinstance(prune_raw, dict) or set(prune_raw) - {
            "every",
            "min_steps",
            "reduction",
            "mode",
        }:
            raise SpecError("prune", f"{{every: <steps>, min_steps: <steps>, reduction: <n>, "
                            f"mode: sync|async}} (got {shown(prune_raw)})")  # fmt: skip
        mode = prune_raw.get("mode", "sync")
        if mode not in halving.MODES:
            raise SpecError(
                "prune.mode",
                "sync (every trial waits at each rung for the others) or async (Optuna's "
                f"asynchronous halving) (got {shown(mode)})",
            )
        try:
            every = _int(prune_raw, "every", None, 1)
            min_steps = _int(prune_raw, "min_steps", every, 1)
            reduction = _int(prune_raw, "reduction", 3, 2, 100)
        except SpecError as e:
            raise SpecError(f"prune.{e.field}", e.message) from e
        if every is None:
            raise SpecError("prune.every", "required: the steps between the trials' evaluations")
        if min_steps % every:
            raise SpecError("prune.min_steps", f"a multiple of every ({every}): the trials are "
                            f"judged where they evaluate (got {min_steps})")  # fmt: skip
        prune = Prune(every, min_steps, reduction, mode)
    promote = raw.get("promote")
    if promote is not None and not isinstance(promote, str):
        raise SpecError("promote", f"an alias name (got {shown(promote)})")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 128):
        raise SpecError("name", "text of at most 128 characters")
    seed = _int(raw, "seed", 0, 0, 2**31 - 1)
    return SweepSpec(
        base=dict(base), space=space, sampler=sampler, trials=trials, parallel=parallel,
        metric=metric, direction=direction, prune=prune, promote=promote, seed=seed, name=name,
    )  # fmt: skip


def from_stored(stored: dict[str, Any]) -> SweepSpec:
    """A spec as `to_dict` stored it (already checked: no limits applied again). One stored
    before prune had a mode ran Optuna's asynchronous halving, and goes on with it."""
    prune = stored.get("prune")
    if isinstance(prune, dict) and "mode" not in prune:
        stored = {**stored, "prune": {**prune, "mode": "async"}}
    return parse(stored, max_trials=MAX_INT)
