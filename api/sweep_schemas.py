"""Request and response bodies of the sweeps routes (api.routes.sweeps)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from api.schemas import UtcDatetime

EXAMPLE = {
    "name": "digits-lr",
    "base": {"dataset": "digits", "steps": 2000},
    "space": {
        "lr_g": {"log_uniform": [1e-4, 3e-3]},
        "diversity_weight": {"choice": [0, 0.03, 0.07, 0.15]},
    },
    "sampler": "tpe",
    "trials": 12,
    "parallel": 2,
    "objective": {"metric": "variety", "direction": "maximize"},
    "prune": {"every": 250, "min_steps": 500, "reduction": 3},
    "promote": "best-digits",
}


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str = Field(
        description="a metric the trials log: fid, kid or is where Inception weights exist; "
        "variety, class_accuracy, variety_min anywhere; or a training metric with a direction"
    )
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="left out: minimize for fid and kid, maximize for the others it knows"
    )


class PruneSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every: StrictInt = Field(ge=1, description="steps between the trials' objective evaluations")
    min_steps: StrictInt | None = Field(
        None, ge=1, description="the first rung (a multiple of every; default every)"
    )
    reduction: StrictInt = Field(
        3, ge=2, le=100, description="keep the best 1/reduction at each rung"
    )
    mode: Literal["sync", "async"] = Field(
        "sync",
        description="sync: every trial waits (paused, at a checkpoint) at each rung until all "
        "have reached it, then the best go on; async: Optuna's asynchronous halving, which "
        "judges a trial against those that arrived before it (its first trials always go on)",
    )


class SweepCreate(BaseModel):
    """A search over training configs: every trial is a train job of yours."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    name: str | None = Field(None, max_length=128)
    base: dict[str, Any] = Field(
        default_factory=dict, description="every trial's config, as POST /jobs takes it"
    )
    space: dict[str, dict[str, list[Any]]] = Field(
        description="config field -> {choice: [..]} | {uniform: [lo, hi]} | {log_uniform: "
        "[lo, hi]} | {int: [lo, hi]} | {int_log: [lo, hi]}"
    )
    sampler: Literal["grid", "random", "tpe"] = "tpe"
    trials: StrictInt | None = Field(
        None, ge=1, description="trials to run (grid: the grid's size when left out; else 8)"
    )
    parallel: StrictInt = Field(1, ge=1, description="trials running at once")
    objective: Objective | str | None = Field(
        None,
        description="a metric's name, or {metric, direction}; left out: fid where Inception "
        "weights exist, else variety",
    )
    prune: PruneSpec | None = Field(None, description="successive halving; null: none")
    promote: str | None = Field(None, description="the alias the best trial's model gets")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1, description="the sampler's seed")


class SweepOut(BaseModel):
    id: str
    owner: str
    name: str | None
    state: str = Field(description="running, succeeded, failed or cancelled")
    sampler: str
    trials: int
    parallel: int
    metric: str
    direction: str
    promote: str | None
    trial_states: dict[str, int] = Field(description="trials per job state")
    best_trial: int | None
    best_value: float | None
    best_job_id: str | None
    note: str | None = Field(description="why the sweep waits, when it does")
    error: str | None
    spec: dict[str, Any]
    created_at: UtcDatetime
    finished_at: UtcDatetime | None


class SweepList(BaseModel):
    items: list[SweepOut]
    total: int


class TrialOut(BaseModel):
    number: int
    job_id: str
    state: str
    step: int
    total_steps: int
    params: dict[str, Any]
    objective: float | None = Field(description="the newest value of the sweep's metric")
    objective_step: int | None
    reason: str | None = Field(description="why it was pruned or failed")
    model_id: str | None = Field(description="its latest model")
    curve: list[tuple[int, float]] | None = Field(
        None, description="with ?curves=true: the objective at each step it was measured"
    )


class TrialList(BaseModel):
    sweep_id: str
    metric: str
    direction: str
    items: list[TrialOut]
